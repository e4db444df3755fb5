"""The launcher dashboard and the sidebar's runs list in Debian's Chromium, through a real
hub: the launcher opens from the user's own server (/user/NAME/gpulab-launcher/), a form
beyond the Dask-worker limit shows why and starts nothing, a form within it starts a
cluster and a run whose live dashboard shows its first points; the sidebar lists the run
and its share dialog shares it with another user (checked in the run store's ACL)."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from gpulab.runs import RunStore
from tests.e2e.browser_steps import admin_at_a_gpu_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# The number of points in the page's Bokeh data sources (the run view's curves).
POINTS_JS = """() => {
  let points = 0;
  for (const doc of (window.Bokeh && window.Bokeh.documents) || []) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (!data || typeof data !== 'object') continue;
      const xs = data instanceof Map ? data.get('x') : data.x;
      if (xs && xs.length) points += xs.length;
    }
  }
  return points;
}"""


def find_run(state_dir: Path, owner: str, run_id: str):
    """The run, wherever the spawner pointed the server's run store (GPULAB_RUNS_DIR, or
    the user's home): found by its folder under the hub's state folder."""
    for manifest in state_dir.rglob(f"{owner}/{run_id}/manifest.json"):
        return RunStore(manifest.parent.parent.parent).open(owner, run_id)
    raise AssertionError(f"no run {owner}/{run_id} under {state_dir}")


def set_input(page, css_class, value):
    field = page.locator(f".{css_class} input").first
    field.fill(str(value))
    field.press("Enter")  # Bokeh commits a text or number input's value on change


def test_launch_a_run_from_the_served_launcher_and_share_it(gpu_hub, gpu_admin, page):
    with admin_at_a_gpu_server(gpu_hub, gpu_admin, page, max_dask_workers=2):
        # The launcher, served from the user's own server (started on first visit).
        page.goto(f"{gpu_hub.url}/user/admin/gpulab-launcher/", timeout=120_000)
        expect(page).to_have_title("gpulab launcher", timeout=120_000)
        expect(page.locator(".gpulab-launch button").first).to_be_visible(timeout=60_000)
        expect(page.locator(".gpulab-limits").first).to_contain_text(
            "at most 2 Dask workers at once")

        # Beyond the limit: the limits check's reason shows, nothing starts.
        set_input(page, "gpulab-form-workers", 3)
        set_input(page, "gpulab-hp-steps", 40)
        page.locator(".gpulab-launch button").first.click()
        alert = page.locator(".gpulab-launch-error").first
        expect(alert).to_contain_text("your limit is 2 at once", timeout=30_000)
        expect(page.locator(".gpulab-run-link")).to_have_count(0)

        # Within it: a cluster, a run, its live dashboard with its first points.
        set_input(page, "gpulab-form-workers", 2)
        set_input(page, "gpulab-form-run-name", "digits <b>e2e</b>")
        page.locator(".gpulab-launch button").first.click()
        expect(page.locator(".gpulab-progress").first).to_contain_text(
            re.compile("cluster starting|training|finished"), timeout=30_000)
        link = page.locator("a.gpulab-run-link").first
        expect(link).to_be_visible(timeout=180_000)
        href = link.get_attribute("href")
        match = re.search(r"/services/dashboards/runs/admin/([0-9]{8}-[0-9]{6}-[0-9a-f]{6})$",
                          href)
        assert match, href
        run_id = match.group(1)
        page.wait_for_function(POINTS_JS, timeout=120_000)  # some point is drawn
        expect(page.locator(".gpulab-progress").first).to_contain_text(
            "finished: step 39", timeout=180_000)
        assert page.evaluate(POINTS_JS) >= 40
        run = find_run(gpu_hub.state_dir, "admin", run_id)
        assert run.manifest().name == "digits <b>e2e</b>"
        assert run.manifest().status == "finished"

        # The sidebar's runs list: the run, and its share dialog.
        # ?reset: JupyterLab's default layout, not the one an earlier test left (with the
        # gpulab sidebar open, a click on its tab would close it).
        page.goto(f"{gpu_hub.url}/user/admin/lab?reset", timeout=120_000)
        page.locator('.jp-SideBar [data-id="gpulab-sidebar"]').click(timeout=60_000)
        item = page.locator(f'[data-testid="gpulab-run"][data-run-id="{run_id}"]')
        expect(item).to_be_visible(timeout=30_000)
        expect(item.get_by_test_id("gpulab-run-name")).to_have_text("digits <b>e2e</b>")
        expect(item.get_by_test_id("gpulab-run-status")).to_have_text("finished")
        expect(item.get_by_test_id("gpulab-run-open")).to_have_attribute(
            "href", re.compile(f"/services/dashboards/runs/admin/{run_id}$"))
        item.get_by_test_id("gpulab-run-share").click()
        dialog = page.get_by_test_id("gpulab-share-dialog")
        expect(dialog).to_be_visible()
        expect(page.get_by_test_id("gpulab-share-nobody")).to_be_visible(timeout=30_000)
        page.get_by_test_id("gpulab-share-users-input").fill("alice")
        page.get_by_test_id("gpulab-share-add").click()
        shared = page.locator('[data-testid="gpulab-share-user"][data-name="alice"]')
        expect(shared).to_be_visible(timeout=30_000)
        assert run.acl().users == ["alice"]
        # A view-only link: shown once, and it lets its holder view the run.
        page.get_by_test_id("gpulab-link-create").click()
        new_link = page.get_by_test_id("gpulab-link-new")
        expect(new_link).to_have_value(re.compile(r"/services/dashboards/links/\S+$"),
                                       timeout=30_000)
        link_token = new_link.input_value().rsplit("/", 1)[1]
        assert run.can_view(None, token=link_token)
        expect(page.get_by_test_id("gpulab-link")).to_have_attribute("data-active", "true")
        page.locator(".jp-Dialog .jp-mod-accept").click()
