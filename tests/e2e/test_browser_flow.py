"""A person's first visit, in Debian's Chromium: log in, JupyterLab, run a cell, stop, log out."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_steps import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_admin_logs_in_runs_a_cell_stops_and_logs_out(hub, admin_password, page):
    # The hub starts the server on first login (spawn pending page) and opens JupyterLab.
    log_in(page, hub.url, "admin", admin_password, landing=re.compile(r"/user/admin/lab"))
    notebook_card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
    notebook_card.wait_for(timeout=60_000)
    notebook_card.click()

    cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    cell.wait_for(timeout=60_000)
    # Wait until the kernel is connected and idle (status bar "... | Idle"): a cell run
    # while the kernel is still connecting is not executed.
    expect(page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle"))).to_have_count(
        1, timeout=60_000
    )
    cell.click()
    page.keyboard.type("1 + 1")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").first
    expect(output).to_have_text("2", timeout=60_000)

    page.goto(f"{hub.url}/hub/home")
    page.click("#stop")
    expect(page.locator("#start")).to_be_visible(timeout=60_000)

    page.goto(f"{hub.url}/hub/logout")
    expect(page.locator("#login_submit")).to_be_visible(timeout=30_000)
    page.goto(f"{hub.url}/hub/home")
    expect(page).to_have_url(re.compile(r"/hub/login"))
