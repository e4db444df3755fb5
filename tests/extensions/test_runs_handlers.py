"""The /gpulab/runs REST handlers in a real Jupyter server: the runs list (own and shared),
sharing and links by the owner only, the same 404 for others' runs, links turned off, bad
bodies named by field, and cookie writes refused without the XSRF token."""

import json

import pytest
import requests
from tornado.httpclient import HTTPClientError

from gpulab.runs import RunStore
from tests.extensions.live_server import LiveServer


async def call(jp_fetch, method, *parts, body=None, raw=None):
    kwargs = {"method": method, "headers": {}}
    if raw is not None or body is not None:
        kwargs["body"] = raw if raw is not None else json.dumps(body)
        kwargs["headers"]["Content-Type"] = "application/json"
    elif method in ("POST", "PATCH"):
        kwargs["body"] = b""
    try:
        response = await jp_fetch("gpulab", "runs", *parts, **kwargs)
    except HTTPClientError as e:
        response = e.response
    text = response.body.decode() if response.body else ""
    return response.code, (json.loads(text) if text else None)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """alice's server; alice has a run, bob shares one with her and keeps one private."""
    root = tmp_path / "runs"
    monkeypatch.setenv("GPULAB_RUNS_DIR", str(root))
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("GPULAB_DASHBOARDS_URL", "https://hub.example/services/dashboards/")
    monkeypatch.delenv("GPULAB_RUN_LINKS", raising=False)
    store = RunStore(root)
    mine = store.create("alice", "<b>mine</b>", config={"lr": 0.1})
    for step in range(5):
        mine.log(step, loss=1.0 / (step + 1))
    mine.flush()
    shared = store.create("bob", "shared")
    shared.share_with(["alice"], actor="bob")
    private = store.create("bob", "private")
    store.ids = {"mine": mine.id, "shared": shared.id, "private": private.id}
    return store


async def test_lists_own_and_shared_runs(jp_fetch, store):
    status, body = await call(jp_fetch, "GET")
    assert status == 200, body
    assert body["user"] == "alice" and body["links_allowed"] is True
    by_name = {r["name"]: r for r in body["runs"]}
    assert set(by_name) == {"<b>mine</b>", "shared"}  # not bob's private run
    mine = by_name["<b>mine</b>"]
    assert mine["mine"] is True and mine["owner"] == "alice" and mine["step"] == 4
    assert mine["status"] == "running"
    assert mine["dashboard_url"] == (
        f"https://hub.example/services/dashboards/runs/alice/{store.ids['mine']}")
    assert by_name["shared"]["mine"] is False and by_name["shared"]["step"] is None


async def test_owner_shares_and_unshares(jp_fetch, store):
    run_id = store.ids["mine"]
    status, acl = await call(jp_fetch, "GET", "alice", run_id, "acl")
    assert status == 200 and acl["users"] == [] and acl["owner"] == "alice"
    status, acl = await call(jp_fetch, "PATCH", "alice", run_id, "acl",
                             body={"share": {"users": ["bob", "carol"], "groups": ["ws-1"]}})
    assert status == 200, acl
    assert acl["users"] == ["bob", "carol"] and acl["groups"] == ["ws-1"]
    assert store.open("alice", run_id).acl().users == ["bob", "carol"]
    status, acl = await call(jp_fetch, "PATCH", "alice", run_id, "acl",
                             body={"unshare": {"users": ["carol"]}})
    assert status == 200 and acl["users"] == ["bob"]
    assert store.open("alice", run_id).can_view("bob")


async def test_runs_not_owned_answer_the_same_404(jp_fetch, store):
    answers = set()
    for owner, run_id in [("bob", store.ids["shared"]), ("bob", store.ids["private"]),
                          ("bob", "20990101-000000-abcdef"), ("alice", "nonsense")]:
        for method, parts, body in [("GET", ("acl",), None),
                                    ("PATCH", ("acl",), {"share": {"users": ["mallory"]}}),
                                    ("POST", ("links",), {"expires_in_seconds": 60}),
                                    ("DELETE", ("links", "0123456789ab"), None)]:
            status, answer = await call(jp_fetch, method, owner, run_id, *parts, body=body)
            assert status == 404, (owner, run_id, method, answer)
            answers.add(answer["message"])
    assert len(answers) == 1
    assert store.open("bob", store.ids["shared"]).acl().users == ["alice"]  # unchanged


async def test_links_created_once_and_revoked(jp_fetch, store):
    run_id = store.ids["mine"]
    status, link = await call(jp_fetch, "POST", "alice", run_id, "links",
                              body={"expires_in_seconds": 3600})
    assert status == 201, link
    assert link["active"] is True and link["token"]
    assert link["url"].endswith("/services/dashboards/links/" + link["token"])
    run = store.open("alice", run_id)
    assert run.can_view(None, token=link["token"])
    status, acl = await call(jp_fetch, "GET", "alice", run_id, "acl")
    assert "token" not in json.dumps(acl["links"]) and acl["links"][0]["id"] == link["id"]
    status, _ = await call(jp_fetch, "DELETE", "alice", run_id, "links", link["id"])
    assert status == 204
    assert not run.can_view(None, token=link["token"])
    status, body = await call(jp_fetch, "DELETE", "alice", run_id, "links", "ffffffffffff")
    assert status == 404 and "no link" in body["message"]


async def test_links_turned_off_are_refused(jp_fetch, store, monkeypatch):
    monkeypatch.setenv("GPULAB_RUN_LINKS", "0")
    status, body = await call(jp_fetch, "POST", "alice", store.ids["mine"], "links",
                              body={"expires_in_seconds": 60})
    assert status == 403 and "turned off" in body["message"]
    assert store.open("alice", store.ids["mine"]).acl().links == []
    status, listed = await call(jp_fetch, "GET")
    assert listed["links_allowed"] is False


BAD_BODIES = [
    ("PATCH", "acl", None, "not json", "body"),
    ("PATCH", "acl", [1], None, "body"),
    ("PATCH", "acl", {"grant": {}}, None, "grant"),
    ("PATCH", "acl", {"share": ["bob"]}, None, "share"),
    ("PATCH", "acl", {"share": {"users": "bob"}}, None, "share.users"),
    ("PATCH", "acl", {"share": {"people": ["bob"]}}, None, "share.people"),
    ("PATCH", "acl", {"share": {"users": ["../etc"]}}, None, "share.users"),
    ("PATCH", "acl", {"share": {"users": ["bob"]}, "unshare": {"groups": ["<b>"]}}, None,
     "unshare.groups"),
    ("POST", "links", {}, None, "expires_in_seconds"),
    ("POST", "links", {"expires_in_seconds": "1h"}, None, "expires_in_seconds"),
    ("POST", "links", {"expires_in_seconds": -5}, None, "expires_in_seconds"),
    ("POST", "links", {"expires_in_seconds": 60, "view": True}, None, "view"),
]


@pytest.mark.parametrize(("method", "route", "body", "raw", "field"), BAD_BODIES)
async def test_bad_bodies_are_named_and_change_nothing(jp_fetch, store, method, route, body,
                                                       raw, field):
    status, answer = await call(jp_fetch, method, "alice", store.ids["mine"], route,
                                body=body, raw=raw)
    assert status == 400, answer
    assert answer["field"] == field and answer["message"]
    acl = store.open("alice", store.ids["mine"]).acl()
    assert (acl.users, acl.groups, acl.links) == ([], [], [])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs-live")
    server = LiveServer.start(root, {"GPULAB_RUNS_DIR": str(root / "runs"),
                                     "JUPYTERHUB_USER": "alice"})
    yield server
    server.stop()


def test_cookie_writes_need_the_xsrf_token(live):
    run = RunStore(live.env["GPULAB_RUNS_DIR"]).create("alice", "xsrf")
    session = requests.Session()
    session.get(live.url + "login")
    answer = session.post(live.url + "login", allow_redirects=False,
                          data={"password": live.token, "_xsrf": session.cookies["_xsrf"]})
    assert answer.status_code == 302
    listed = session.get(live.url + "gpulab/runs").json()
    assert [r["id"] for r in listed["runs"]] == [run.id]
    acl_url = live.url + f"gpulab/runs/alice/{run.id}/acl"
    refused = session.patch(acl_url, json={"share": {"users": ["bob"]}})
    assert refused.status_code == 403 and "_xsrf" in refused.json()["message"]
    refused = session.post(live.url + f"gpulab/runs/alice/{run.id}/links",
                           json={"expires_in_seconds": 60})
    assert refused.status_code == 403
    assert run.acl().users == [] and run.acl().links == []
    xsrf = {"X-XSRFToken": session.cookies["_xsrf"]}
    shared = session.patch(acl_url, json={"share": {"users": ["bob"]}}, headers=xsrf)
    assert shared.status_code == 200 and run.acl().users == ["bob"]
    for method, path in [("GET", "runs"), ("GET", f"runs/alice/{run.id}/acl")]:
        assert requests.request(method, live.url + "gpulab/" + path).status_code == 403
