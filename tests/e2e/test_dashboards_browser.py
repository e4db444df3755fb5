"""Run dashboards through the hub in Debian's Chromium: the owner logs in, opens a run's
dashboard at /services/dashboards/runs/OWNER/RUN_ID and sees a point a writer appends
appear without a reload; a run named like markup shows as text; a view-only link opens
without login and its live page stops showing the run once the link is revoked."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from gpulab.dashboards.pages import GONE_TEXT
from gpulab.runs import RunStore
from gpulab.runs import acl as acls
from tests.e2e.browser_steps import BOKEH_LAST_STEPS, PAGE_TEXTS, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
SERVICE = "/services/dashboards"
EVIL = "<img src=x onerror=alert(1)>"
DOCS = Path(__file__).resolve().parents[2] / "docs"




@pytest.fixture(scope="module")
def store(hub):
    return RunStore(hub.state_dir / "runs")


def test_the_owner_watches_a_run_live_and_its_name_is_text(hub, admin_password, store, page,
                                                            tmp_path):
    run = store.create("admin", EVIL, config={"lr": 0.01, "layers": 4, "optimizer": "adam"})
    for step in range(20):
        run.log(step, loss=1.0 / (step + 1), accuracy=step / 20, samples=64)
    run.flush()
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    log_in(page, hub.url, "admin", admin_password, landing=re.compile(r"/(hub|user)/"))
    page.goto(f"{hub.url}{SERVICE}/runs/admin/{run.id}")  # through the hub's OAuth
    page.wait_for_function(f"() => ({BOKEH_LAST_STEPS})().includes(19)", timeout=60_000)
    shown = page.evaluate(PAGE_TEXTS)
    assert EVIL in shown, shown[:40]
    assert "IMG:x" not in shown
    run.log(20, loss=0.04, accuracy=1.0, samples=64)
    run.flush()
    # Appears without a reload (how fast is bench.dashboard's update_latency_s).
    page.wait_for_function(f"() => ({BOKEH_LAST_STEPS})().includes(20)", timeout=15_000)
    assert alerts == []

    # The README's picture, of a run with a plausible name and curves: refreshed with
    # GPULAB_UPDATE_DOCS=1 (else kept in tmp).
    demo = store.create("admin", "mlp-digits (lr 0.01, 2 ranks)",
                        config={"lr": 0.01, "hidden": 128, "batch_size": 64, "epochs": 3})
    rng = np.random.default_rng(0)
    for step in range(300):
        loss = 2.3 * np.exp(-step / 60) + 0.08 + 0.05 * rng.standard_normal()
        demo.log(step, loss=float(loss), val_accuracy=float(1 - loss / 2.5), samples=128)
    demo.flush()
    page.goto(f"{hub.url}{SERVICE}/runs/admin/{demo.id}")
    page.wait_for_function(f"() => ({BOKEH_LAST_STEPS})().includes(299)", timeout=60_000)
    shot = DOCS / "run-dashboard.png" if os.environ.get("GPULAB_UPDATE_DOCS") else (
        tmp_path / "run-dashboard.png")
    page.set_viewport_size({"width": 1200, "height": 900})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shot))

    # Both runs overlaid on the compare page; the operators' usage page renders.
    page.goto(f"{hub.url}{SERVICE}/compare?run=admin/{run.id}&run=admin/{demo.id}")
    page.wait_for_function(
        f"() => {{ const s = ({BOKEH_LAST_STEPS})(); return s.includes(20) && s.includes(299); }}",
        timeout=60_000,
    )
    assert EVIL in page.evaluate(PAGE_TEXTS)  # the table's cell, as text
    page.goto(f"{hub.url}{SERVICE}/usage")
    page.wait_for_function(f"() => ({PAGE_TEXTS})().includes('Allocations open now')",
                           timeout=60_000)
    assert alerts == []


def test_a_link_opens_without_login_and_stops_when_revoked(hub, store, browser):
    run = store.create("admin", "linked run")
    for step in range(5):
        run.log(step, loss=1.0 / (step + 1))
    run.flush()
    link_id, token = acls.create_link(run, 600, actor="admin")
    context = browser.new_context()  # no hub login at all
    try:
        page = context.new_page()
        page.goto(f"{hub.url}{SERVICE}/links/{token}")
        page.wait_for_function(f"() => ({BOKEH_LAST_STEPS})().includes(4)", timeout=60_000)
        acls.revoke_link(run, link_id, actor="admin")
        # The live session re-checks the link before each refresh and stops serving.
        page.wait_for_function(
            f"() => ({PAGE_TEXTS})().some((t) => t.includes({GONE_TEXT[:30]!r}))", timeout=15_000
        )
        run.log(5, loss=0.1)
        run.flush()
        page.wait_for_timeout(2500)
        assert 5 not in page.evaluate(BOKEH_LAST_STEPS)
        reloaded = page.goto(f"{hub.url}{SERVICE}/links/{token}")
        assert reloaded.status == 404
    finally:
        context.close()
