"""The spawn form in Chromium: profiles from the node's GPUs, unavailable ones greyed with
their reason, a spawn denied at submit time shown with the quota's message, and a
class-time reservation as a member and as an outsider see it."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from gpulab.quota.ledger import Ledger
from gpulab.quota.reservations import cancel, clock, reserve
from tests.e2e.browser_steps import log_in, wait_ready
from tests.e2e.test_gpu_spawns import wait_stopped

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_form_greys_what_is_taken_and_shows_a_denial(gpu_hub, gpu_admin, page):
    gpu_admin.api("POST", "/users", json={"usernames": ["fay", "gus"]})
    assert gpu_admin.api("POST", "/users/fay/server", json={"gpus": 1}).ok
    wait_ready(gpu_admin, "fay")
    try:
        log_in(page, gpu_hub.url, "admin", gpu_hub.printed_admin_password)
        page.goto(f"{gpu_hub.url}/hub/spawn")

        profiles = page.locator(".gpulab-profile")
        expect(profiles).to_have_count(3)  # cpu, 1-gpu, 2-gpus on a 2-GPU node
        two = page.locator('.gpulab-profile[data-profile="2-gpus"]')
        expect(two.locator("input")).to_be_disabled()
        expect(two).to_contain_text("only 1 of 2 GPUs are free")
        one = page.locator('.gpulab-profile[data-profile="1-gpu"]')
        expect(one.locator("input")).to_be_enabled()
        expect(page.locator('.gpulab-profile[data-profile="cpu"] input')).to_be_checked()

        one.locator("input").check()
        # Someone takes the last GPU while the form is open: the submit is denied.
        assert gpu_admin.api("POST", "/users/gus/server", json={"gpus": 1}).ok
        wait_ready(gpu_admin, "gus")
        page.locator('form input[type="submit"], form button[type="submit"]').first.click()
        error = page.locator(".spawn-error-msg")
        expect(error).to_contain_text("all 2 GPUs are in use", timeout=30_000)
        # The form comes back, now with both GPU profiles greyed.
        expect(page.locator('.gpulab-profile[data-profile="1-gpu"] input')).to_be_disabled()
        assert gpu_admin.api("GET", "/users/admin").json()["servers"] == {}
    finally:
        for name in ("fay", "gus"):
            gpu_admin.api("DELETE", f"/users/{name}/server")
            wait_stopped(gpu_admin, name)


def test_form_shows_a_reservation_to_a_member_and_greys_it_for_others(gpu_hub, gpu_admin, page):
    """One of the 2 GPUs reserved for the group form-ws, now: the admin as its member, then
    (removed from it) as an outsider."""
    group = "form-ws"
    created = gpu_admin.api("POST", f"/groups/{group}", json={"users": ["admin"]})
    assert created.status_code == 201, created.text
    with Ledger(f"sqlite:///{gpu_hub.state_dir / 'ledger.sqlite'}") as ledger:
        now = ledger.db_now()
        reservation = reserve(ledger, group, 1, now - timedelta(minutes=1),
                              now + timedelta(hours=1), capacity=2)
        until = clock(reservation.ends_at, now)
        try:
            log_in(page, gpu_hub.url, "admin", gpu_hub.printed_admin_password)
            page.goto(f"{gpu_hub.url}/hub/spawn")
            one = page.locator('.gpulab-profile[data-profile="1-gpu"]')
            two = page.locator('.gpulab-profile[data-profile="2-gpus"]')
            expect(one.locator("input")).to_be_enabled()
            expect(one).to_contain_text(f"from workshop {group}'s reservation of 1 GPU")
            expect(two.locator("input")).to_be_disabled()
            expect(two).to_contain_text(
                f"your workshop {group} has 1 GPU reserved until {until}; 0 in use")

            left = gpu_admin.api("DELETE", f"/groups/{group}/users", json={"users": ["admin"]})
            assert left.ok, left.text
            page.reload()
            expect(one.locator("input")).to_be_enabled()
            expect(one).not_to_contain_text("reserv")
            expect(two.locator("input")).to_be_disabled()
            expect(two).to_contain_text(f"reserved for workshop {group} until {until}")
        finally:
            cancel(ledger, reservation.id)
            gpu_admin.api("DELETE", f"/groups/{group}")
