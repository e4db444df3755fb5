"""The quota service on a real hub: a budget that runs out is warned about (visible to the
user through the API), the server is stopped after the grace period and the ledger says
why; users see only their own quota, operators everyone's, and metrics."""

import json
from pathlib import Path

import pytest
import requests

from gpulab.quota.ledger import Ledger
from tests.e2e.harness import HubSession, RunningHub
from tests.waiting import poll

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


def service_call(hub, method, path, token, body=None):
    data = None if body is None else body if isinstance(body, str) else json.dumps(body)
    return requests.request(
        method,
        f"{hub.url}{SERVICE}{path}",
        headers={"Authorization": f"token {token}"},
        data=data,
        timeout=30,
    )


def test_a_servers_token_starts_dask_clusters_within_the_limit(quota_hub, admin):
    ledger = Ledger(f"sqlite:///{quota_hub.state_dir / 'ledger.sqlite'}")
    assert admin.api("POST", "/users/gus").status_code == 201
    # gus may run 6 Dask workers, and a GPU budget that won't run out during the test.
    limits = {"max_dask_workers": 6, "gpu_hours": None}
    policy = service_put(quota_hub, "/api/policies/users/gus", admin.token, limits)
    assert policy.status_code == 200, policy.text
    spawn = admin.api("POST", "/users/gus/server", json={"gpus": 1})
    assert spawn.status_code in (201, 202), spawn.text
    poll(
        lambda: admin.api("GET", "/users/gus").json()["servers"].get("", {}).get("ready"),
        90,
        "gus's server to be ready",
    )
    # The server's own API token may call the quota service (c.Spawner.server_token_scopes)
    # at the URL its environment names.
    tokens = admin.api("GET", "/users/gus/tokens").json()["api_tokens"]
    (server_token,) = [t for t in tokens if (t.get("note") or "").startswith("Server at")]
    assert "access:services!service=gpulab-quota" in server_token["scopes"]
    pid = admin.api("GET", "/users/gus").json()["servers"][""]["state"]["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    assert env["GPULAB_QUOTA_URL"].endswith("/services/gpulab-quota/")
    assert env["GPULAB_MAX_DASK_WORKERS"] == "6"
    as_server = requests.get(
        f"{env['GPULAB_QUOTA_URL']}api/me",
        headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
        timeout=30,
    )
    assert as_server.status_code == 200 and as_server.json()["user"] == "gus", as_server.text
    # A token with only that scope, as the server's holds.
    response = admin.api(
        "POST",
        "/users/gus/tokens",
        json={"scopes": ["access:services!service=gpulab-quota"], "expires_in": 3600},
    )
    assert response.status_code == 201, response.text
    gus = response.json()["token"]

    me = service_get(quota_hub, "/api/me", gus).json()
    (allocation,) = me["allocations"]
    (device,) = allocation["devices"]
    assert env["GPULAB_ALLOCATED_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == device
    assert me["dask_workers"] == {"limit": 6, "in_use": 0} and me["clusters"] == []

    prep = {"key": "c-prep", "server": "", "name": "prep", "workers": 4, "gpus": 1}
    created = service_call(quota_hub, "POST", "/api/clusters", gus, prep | {"devices": [device]})
    assert created.status_code == 201, created.text
    cluster = created.json()["cluster"]
    assert (cluster["key"], cluster["workers"], cluster["devices"]) == ("c-prep", 4, [device])
    assert cluster["allocation_id"] == allocation["id"] and cluster["stopped_at"] is None

    # Bad requests are 400s naming the field, refusals say why (audited); none records a
    # cluster.
    for body, status, field in (
        ({"key": "c2", "workers": 0}, 400, "workers"),
        ({"key": "c2", "workers": "2"}, 400, "workers"),
        ({"key": "c 2", "workers": 1}, 400, "key"),
        ({"key": "c2", "workers": 1, "colour": "red"}, 400, "colour"),
        ({"workers": 1}, 400, "key"),
        ({"key": "c2", "workers": 1, "gpus": 1, "devices": []}, 400, "gpus"),
        ("[1, 2]", 400, "body"),
        ("{not json", 400, "body"),
    ):
        bad = service_call(quota_hub, "POST", "/api/clusters", gus, body)
        assert (bad.status_code, bad.json().get("field")) == (status, field), bad.text
        assert field in bad.json()["message"]
    for body, status, reason in (
        ({"key": "c2", "workers": 1, "gpus": 1, "devices": ["GPU-not-yours"]}, 403, "devices"),
        ({"key": "c2", "workers": 1, "server": "nope"}, 409, "no_server"),
    ):
        refused = service_call(quota_hub, "POST", "/api/clusters", gus, body)
        assert (refused.status_code, refused.json()["reason"]) == (status, reason), refused.text
    too_big = service_call(quota_hub, "POST", "/api/clusters", gus, {"key": "x" * 20_000})
    assert too_big.status_code == 413
    assert [c.key for c in ledger.open_clusters("gus")] == ["c-prep"]
    assert {e.reason for e in ledger.audit("gus", action="cluster_denied")} == {
        "devices",
        "no_server",
    }

    over = service_call(
        quota_hub, "POST", "/api/clusters", gus, {"key": "c-train", "name": "train", "workers": 3}
    )
    assert over.status_code == 403, over.text
    assert over.json() == {
        "status": 403,
        "message": "Dask workers: this cluster asks for 3 but your limit is 6 at once and 4 "
        "are in use (cluster 'prep': 4). Stop or scale down a cluster, or ask for fewer workers.",
        "reason": "max_dask_workers",
        "limit": 6,
        "in_use": 4,
    }
    listed = service_get(quota_hub, "/api/clusters", gus)
    assert [c["key"] for c in listed.json()["clusters"]] == ["c-prep"]

    grow = service_call(quota_hub, "PATCH", "/api/clusters/c-prep", gus, {"workers": 7})
    assert grow.status_code == 403 and grow.json()["reason"] == "max_dask_workers"
    shrink = service_call(quota_hub, "PATCH", "/api/clusters/c-prep", gus, {"workers": 2})
    assert shrink.status_code == 200 and shrink.json()["cluster"]["workers"] == 2
    assert (
        service_call(quota_hub, "PATCH", "/api/clusters/nope", gus, {"workers": 1}).status_code
        == 404
    )
    cpu = service_call(quota_hub, "POST", "/api/clusters", gus, {"key": "c-cpu", "workers": 4})
    assert cpu.status_code == 201, cpu.text

    metrics = service_get(quota_hub, "/metrics", admin.token).text
    assert 'gpulab_dask_workers{group="none"} 6.0' in metrics
    assert "gus" not in metrics  # by group, never by user

    assert service_call(quota_hub, "DELETE", "/api/clusters/c-prep", gus).status_code == 204
    assert service_call(quota_hub, "DELETE", "/api/clusters/c-prep", gus).status_code == 404
    me = service_get(quota_hub, "/api/me", gus).json()
    assert [c["key"] for c in me["clusters"]] == ["c-cpu"]
    assert me["dask_workers"] == {"limit": 6, "in_use": 4}

    # Stopping the server closes the clusters it still ran, in the ledger.
    assert admin.api("DELETE", "/users/gus/server").status_code in (202, 204)
    poll(lambda: not ledger.open_clusters("gus"), 60, "gus's clusters to close")
    closed = ledger.audit("gus", action="cluster_released", limit=1)[0]
    assert (closed.detail["key"], closed.reason) == ("c-cpu", "server stopped")
    assert ledger.verify() == []
    ledger.close()
    # Every refusal above was an expected answer, logged without a traceback.
    assert "Traceback" not in quota_hub.output
