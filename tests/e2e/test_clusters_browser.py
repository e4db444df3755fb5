"""The gpulab sidebar in Debian's Chromium, on a hub with static GPUs: the allocation card
shows the server's GPU, a cluster is created from the New cluster dialog, its workers
appear, its Dask dashboard opens through the server's proxy, and it is stopped."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_steps import admin_at_a_gpu_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_sidebar_starts_shows_and_stops_a_cluster(gpu_hub, gpu_admin, page, tmp_path):
    with admin_at_a_gpu_server(gpu_hub, gpu_admin, page, max_dask_workers=2):
        # JupyterLab's default layout, not one an earlier test left (with the gpulab
        # sidebar open, a click on its tab would close it).
        page.goto(f"{gpu_hub.url}/user/admin/lab?reset", timeout=120_000)

        # Open the sidebar from its tab on the left.
        page.locator('.jp-SideBar [data-id="gpulab-sidebar"]').click(timeout=60_000)
        sidebar = page.get_by_test_id("gpulab-sidebar")
        expect(sidebar).to_be_visible()

        # The allocation card: this server's one GPU, the quota, the Dask workers.
        gpus = page.get_by_test_id("gpulab-gpu")
        expect(gpus).to_have_count(1, timeout=30_000)
        expect(page.get_by_test_id("gpulab-gpu-name")).to_contain_text("Static GPU")
        expect(page.get_by_test_id("gpulab-quota")).to_be_visible()
        expect(page.get_by_test_id("gpulab-dask-workers")).to_be_visible()
        expect(page.get_by_test_id("gpulab-no-clusters")).to_be_visible()

        # New cluster: CPU workers (this hub's GPUs are static: no CUDA behind them).
        # Three are over the limit of 2: the quota's refusal shows, nothing starts.
        page.get_by_test_id("gpulab-new-cluster").click()
        expect(page.get_by_test_id("gpulab-new-cluster-form")).to_be_visible()
        page.get_by_test_id("gpulab-form-name").fill("prep")
        page.get_by_test_id("gpulab-form-workers").fill("3")
        gpu_choice = page.get_by_test_id("gpulab-form-gpus")
        if gpu_choice.count():
            gpu_choice.select_option("0")
        page.locator(".jp-Dialog .jp-mod-accept").click()
        refused = page.get_by_test_id("gpulab-form-error").or_(page.get_by_test_id("gpulab-error"))
        expect(refused.first).to_contain_text("your limit is 2 at once", timeout=30_000)
        expect(page.get_by_test_id("gpulab-cluster")).to_have_count(0)
        if page.locator(".jp-Dialog").count() == 0:
            page.get_by_test_id("gpulab-new-cluster").click()
            page.get_by_test_id("gpulab-form-name").fill("prep")
            if gpu_choice.count():
                gpu_choice.select_option("0")
        page.get_by_test_id("gpulab-form-workers").fill("2")
        page.locator(".jp-Dialog .jp-mod-accept").click()

        cluster = page.get_by_test_id("gpulab-cluster")
        expect(cluster).to_have_count(1, timeout=30_000)
        expect(cluster).to_have_attribute("data-status", "running", timeout=90_000)
        expect(page.get_by_test_id("gpulab-cluster-name")).to_have_text("prep")
        expect(page.get_by_test_id("gpulab-cluster-workers-count")).to_contain_text("2")
        page.get_by_test_id("gpulab-cluster-workers-count").click()
        expect(page.get_by_test_id("gpulab-cluster-worker")).to_have_count(2)
        expect(page.get_by_test_id("gpulab-dask-workers")).to_contain_text("2")
        # The README's picture: refreshed with GPULAB_UPDATE_DOCS=1 (else kept in tmp).
        shot = DOCS / "sidebar.png" if os.environ.get("GPULAB_UPDATE_DOCS") else (
            tmp_path / "sidebar.png")
        page.locator("#gpulab-sidebar").screenshot(path=str(shot))

        # Its Dask dashboard opens in a new tab, through the server's proxy.
        link = page.get_by_test_id("gpulab-cluster-dashboard")
        href = link.get_attribute("href")
        assert re.search(r"/user/admin/proxy/\d+/status$", href), href
        with page.context.expect_page() as opened:
            link.click()
        dashboard = opened.value
        dashboard.wait_for_load_state()
        expect(dashboard).to_have_title(re.compile("Dask"), timeout=30_000)
        dashboard.close()

        # Stop, confirmed in JupyterLab's dialog: the cluster goes from the list.
        page.get_by_test_id("gpulab-cluster-stop").click()
        page.locator(".jp-Dialog .jp-mod-accept").click()
        expect(page.get_by_test_id("gpulab-cluster")).to_have_count(0, timeout=60_000)
        expect(page.get_by_test_id("gpulab-no-clusters")).to_be_visible()
