"""A run's dashboard in Debian's Chromium (Playwright): the run's name shows as text, and a
point a writer appends appears without a reload."""

import html
import os
from pathlib import Path

import pytest

from gpulab.dashboards import serve_run
from gpulab.runs import RunStore
from gpulab_hub.ports import free_port
from tests.e2e.browser_steps import BOKEH_LAST_STEPS, PAGE_TEXTS
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser
EVIL_NAME = "<img src=x onerror=alert(1)>"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        yield page
        browser.close()


def test_the_dashboard_updates_live_and_shows_names_as_text(tmp_path, page):
    run = RunStore(tmp_path / "runs").create("ada", EVIL_NAME)
    for step in range(20):
        run.log(step, loss=1.0 / (step + 1))
    run.flush()
    port = free_port()
    server = serve_run(run, port)
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(f"() => ({BOKEH_LAST_STEPS})().includes(19)", timeout=30_000)
        # The name is rendered as text (inside Panel's shadow DOM), never as an <img>.
        shown = page.evaluate(PAGE_TEXTS)
        assert EVIL_NAME in shown, shown[:40]
        assert not [t for t in shown if t == "IMG:x"]
        assert html.escape(EVIL_NAME) not in shown  # escaped once, not twice

        run.log(20, loss=0.01)
        run.flush()
        # Appears without a reload (how fast is bench.dashboard's update_latency_s).
        page.wait_for_function(f"() => ({BOKEH_LAST_STEPS})().includes(20)", timeout=10_000)
        if os.environ.get("GPULAB_UPDATE_DOCS"):  # the README's picture
            page.set_viewport_size({"width": 1200, "height": 800})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(DOCS / "run-dashboard.png"))
    finally:
        server.stop()
    assert alerts == []
