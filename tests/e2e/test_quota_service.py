"""The quota service on a real hub: a budget that runs out is warned about (visible to the
user through the API), the server is stopped after the grace period and the ledger says
why; users see only their own quota, operators everyone's, and metrics."""

import json
import time

import pytest
import requests

from gpulab.quota.ledger import Ledger
from tests.e2e.harness import HubSession, RunningHub

pytestmark = pytest.mark.e2e
SERVICE = "/services/gpulab-quota"


@pytest.fixture(scope="module")
def quota_hub(tmp_path_factory):
    hub = RunningHub.start_with_config(
        tmp_path_factory.mktemp("quota-hub") / "state", "quota_hub_config.py"
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def admin(quota_hub):
    session = quota_hub.admin_session()
    assert session.api("POST", "/users", json={"usernames": ["dora", "eve"]}).status_code == 201
    return session


def token_for(admin, name):
    response = admin.api("POST", f"/users/{name}/tokens", json={"expires_in": 3600})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def service_get(hub, path, token):
    return requests.get(
        f"{hub.url}{SERVICE}{path}", headers={"Authorization": f"token {token}"}, timeout=30
    )


def poll(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_budget_that_runs_out_is_warned_then_the_server_is_stopped(quota_hub, admin):
    dora = token_for(admin, "dora")
    spawn = admin.api("POST", "/users/dora/server", json={"gpus": 1})
    assert spawn.status_code in (201, 202), spawn.text

    def warned():
        me = service_get(quota_hub, "/api/me", dora)
        assert me.status_code == 200, me.text
        return me.json()["warnings"]

    (warning,) = poll(warned, 60, "a warning in dora's quota report")
    assert warning["kind"] == "budget"
    assert "will be stopped" in warning["message"]

    def stopped():
        return admin.api("GET", "/users/dora").json()["servers"] == {}

    poll(stopped, 90, "the hub to stop dora's server")
    ledger = Ledger(f"sqlite:///{quota_hub.state_dir / 'ledger.sqlite'}")
    (allocation,) = [a for a in ledger.allocations_since(3600) if a.user == "dora"]
    assert allocation.end_reason == "budget"
    assert allocation.gpu_seconds >= 7.2
    assert ledger.audit("dora", limit=1)[0].action in ("culled", "released")
    assert "culled" in {e.action for e in ledger.audit("dora", limit=20)}

    me = service_get(quota_hub, "/api/me", dora).json()
    assert me["budget_left_gpu_hours"] <= 0
    assert me["allocations"] == [] and me["warnings"] == []
    again = admin.api("POST", "/users/dora/server", json={"gpus": 1})
    assert again.status_code == 403, again.text
    assert "GPU-hours" in again.json()["message"]


def test_users_see_only_their_own_quota_and_operators_see_everyone(quota_hub, admin):
    eve = token_for(admin, "eve")
    me = service_get(quota_hub, "/api/me", eve)
    assert me.status_code == 200
    assert me.json()["user"] == "eve"
    assert me.json()["limits"]["max_gpus"] == 1
    for path in ("/api/usage", "/metrics"):
        denied = service_get(quota_hub, path, eve)
        assert denied.status_code == 403, path
        assert "operator" in denied.json()["message"]
    assert service_get(quota_hub, "/api/me", "not-a-token").status_code in (401, 403)

    usage = service_get(quota_hub, "/api/usage?since=1d", admin.token)
    assert usage.status_code == 200
    assert "dora" in usage.json()["users"]
    bad = service_get(quota_hub, "/api/usage?since=yesterday", admin.token)
    assert bad.status_code == 400 and "since" in bad.json()["message"]

    metrics = service_get(quota_hub, "/metrics", admin.token)
    assert metrics.status_code == 200
    assert "gpulab_gpus_total 2.0" in metrics.text
    assert 'gpulab_admissions_total{reason="budget",result="denied"}' in metrics.text


def service_put(hub, path, token, body):
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.put(
        f"{hub.url}{SERVICE}{path}",
        headers={"Authorization": f"token {token}"},
        data=data,
        timeout=30,
    )


def test_operators_change_policies_at_once_and_users_cannot(quota_hub, admin):
    ledger = Ledger(f"sqlite:///{quota_hub.state_dir / 'ledger.sqlite'}")
    admin.api("POST", "/users/finn")
    finn = token_for(admin, "finn")
    before = service_get(quota_hub, "/api/policies", admin.token).json()

    denied = service_put(quota_hub, "/api/policies/users/finn", finn, {"max_gpus": 2})
    assert denied.status_code == 403 and "operators" in denied.json()["message"]
    for body, status, words in (
        ({"max_gpus": -1}, 400, "max_gpus"),
        ({"gpus": 1}, 400, "gpus"),
        ("{not json", 400, "JSON"),
        ({"profiles": ["x" * 20_000]}, 413, "16"),
    ):
        bad = service_put(quota_hub, "/api/policies/users/finn", admin.token, body)
        assert bad.status_code == status, bad.text
        assert words in bad.json()["message"]
    assert service_get(quota_hub, "/api/policies", admin.token).json() == before

    changed = service_put(quota_hub, "/api/policies/users/finn", admin.token, {"max_gpus": 0})
    assert changed.status_code == 200, changed.text
    assert service_get(quota_hub, "/api/me", finn).json()["limits"]["max_gpus"] == 0
    # The hub's spawner (another process) applies it at the next spawn.
    spawn = admin.api("POST", "/users/finn/server", json={"gpus": 1})
    assert spawn.status_code == 403, spawn.text
    event = ledger.audit(action="limit_changed", limit=1)[0]
    assert (event.actor, event.user) == ("admin", "finn")
    assert event.detail["new"] == {"max_gpus": 0}


def test_a_cookie_session_cannot_write_without_the_xsrf_token(quota_hub, admin):
    # Log in to the service as a browser does (the hub's OAuth), then write with cookies
    # alone, as a forged cross-site form would.
    browser = HubSession(quota_hub.url)
    assert browser.login("admin", quota_hub.printed_admin_password).status_code == 302
    landing = browser.http.get(f"{quota_hub.url}{SERVICE}/api/policies", timeout=30)
    assert landing.status_code == 200, landing.text[:500]
    assert landing.json()["user"] == "admin"  # the OAuth login lands on the service's root
    page = browser.http.get(f"{quota_hub.url}{SERVICE}/api/policies", timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert "users" in page.json()["overrides"]
    forged = browser.http.put(
        f"{quota_hub.url}{SERVICE}/api/policies/users/finn", data=json.dumps({}), timeout=30
    )
    assert forged.status_code == 403
    assert "_xsrf" in forged.json()["message"] or "XSRF" in forged.json()["message"]
