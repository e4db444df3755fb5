"""A second start on the same state folder keeps the admin, its password and the users."""

import stat

import pytest

from gpulab_hub.ports import free_port
from tests.e2e.harness import HubSession, RunningHub

pytestmark = pytest.mark.e2e


def test_second_start_reuses_the_state_and_prints_no_new_password(tmp_path):
    state = tmp_path / "state"
    first = RunningHub.start(state, free_port())
    try:
        password = first.printed_admin_password
        assert password, first.output[-3000:]
        admin = HubSession(first.url)
        assert admin.login("admin", password).status_code == 302
        admin.create_token("admin")
        assert admin.api("POST", "/users/keeper").status_code == 201
    finally:
        first.stop()
    assert first.proc.returncode is not None

    password_file = state / "admin-password"
    assert password_file.read_text().strip() == password
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600

    second = RunningHub.start(state, free_port())  # another port: the state is what persists
    try:
        assert second.printed_admin_password is None
        assert "admin password" not in second.output
        admin = HubSession(second.url)
        assert admin.login("admin", password).status_code == 302
        admin.create_token("admin")
        users = {u["name"] for u in admin.api("GET", "/users").json()}
        assert {"admin", "keeper"} <= users
    finally:
        second.stop()


def test_two_hubs_with_different_ports_run_side_by_side(tmp_path, hub, admin):
    other = RunningHub.start(tmp_path / "other-state", free_port())
    try:
        # Each answers on its own port with its own state: the session hub's admin token
        # means nothing to the other hub.
        assert admin.api("GET", "/users/admin").status_code == 200
        foreign = HubSession(other.url)
        foreign.token = admin.token
        assert foreign.api("GET", "/users/admin").status_code == 403
        other_admin = HubSession(other.url)
        assert other_admin.login("admin", other.printed_admin_password).status_code == 302
    finally:
        other.stop()
