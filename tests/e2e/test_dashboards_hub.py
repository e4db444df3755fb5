"""The dashboards service on a real hub (as ``make run`` starts it), page by page: who gets
a run's dashboard (owner 200; anyone else the same 404 as a missing run; a share lets that
one user read that one run; a link works without login until revoked), the operators'
usage page, the OAuth login, the websocket's origin check, and what a user's server is
told (runs root, links switch, the service's URL).

Runs are written into the hub's runs root directly, as a training job would."""

import html
import json
import re
from pathlib import Path

import pytest
import requests
from bokeh.util.token import get_token_payload
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from gpulab.runs import PermissionDenied, RunStore
from gpulab.runs import acl as acls
from gpulab_hub.dashboards_service import links_enabled
from tests.e2e.harness import HubSession
from tests.waiting import poll

pytestmark = pytest.mark.e2e
SERVICE = "/services/dashboards"
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def users(hub, admin):
    """Tokens of ana (an owner), ben (another user) and cy (ana shares nothing with cy)."""
    names = ["dash-ana", "dash-ben", "dash-cy"]
    created = admin.api("POST", "/users", json={"usernames": names})
    assert created.status_code == 201, created.text
    tokens = {}
    for name in names:
        response = admin.api("POST", f"/users/{name}/tokens", json={"expires_in": 3600})
        assert response.status_code == 201, response.text
        tokens[name.removeprefix("dash-")] = response.json()["token"]
    return tokens


@pytest.fixture(scope="module")
def store(hub):
    return RunStore(hub.state_dir / "runs")


@pytest.fixture(scope="module")
def runs(store):
    """Two of ana's runs: ``main`` (shared later) and ``other`` (never shared)."""
    main = store.create("dash-ana", EVIL, config={"lr": 0.01, "note": "<b>x</b>"})
    other = store.create("dash-ana", "other run")
    for step in range(10):
        main.log(step, loss=1.0 / (step + 1))
        other.log(step, loss=2.0 / (step + 1))
    main.flush()
    other.flush()
    return {"main": main, "other": other}


def get(hub, path, token=None, **kwargs):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(f"{hub.url}{SERVICE}/{path}", headers=headers, timeout=60,
                        allow_redirects=False, **kwargs)


def run_path(run):
    return f"runs/{run.owner}/{run.id}"


def test_the_owner_sees_the_run_and_anyone_else_gets_the_same_404(hub, users, runs):
    main = runs["main"]
    page = get(hub, run_path(main), users["ana"])
    assert page.status_code == 200, page.text[:2000]
    assert "bokeh" in page.text.lower()
    assert page.headers["Cache-Control"] == "no-store"
    forbidden = get(hub, run_path(main), users["ben"])
    missing = get(hub, "runs/dash-ana/20200101-000000-abcdef", users["ben"])
    malformed = get(hub, "runs/dash-ana/..%2F..%2Fetc", users["ana"])
    nobody = get(hub, "runs/nobody/20200101-000000-abcdef", users["ana"])
    assert forbidden.status_code == missing.status_code == 404
    assert malformed.status_code == nobody.status_code == 404
    assert forbidden.text == missing.text == malformed.text == nobody.text
    assert "not found" in forbidden.text.lower()
    # No login: sent to the hub's login (a token-less script gets no run either).
    anonymous = get(hub, run_path(main))
    assert anonymous.status_code == 302
    assert "/hub/api/oauth2/authorize" in anonymous.headers["Location"]


def test_a_share_grants_that_run_read_only_and_nothing_else(hub, users, runs):
    main, other = runs["main"], runs["other"]
    assert get(hub, run_path(main), users["ben"]).status_code == 404
    acls.share_with(main, ["dash-ben"], actor="dash-ana")
    assert get(hub, run_path(main), users["ben"]).status_code == 200
    assert get(hub, run_path(other), users["ben"]).status_code == 404  # that run only
    assert get(hub, run_path(main), users["cy"]).status_code == 404
    # Read-only: the store refuses an ACL change by anyone but the owner, and the service
    # has no endpoint that writes.
    with pytest.raises(PermissionDenied, match="only the owner"):
        acls.share_with(main, ["dash-cy"], actor="dash-ben")
    before = acls.acl_of(main)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = requests.request(
            method, f"{hub.url}{SERVICE}/{run_path(main)}", timeout=30, data="{}",
            headers={"Authorization": f"token {users['ben']}"},
        )
        assert response.status_code in (403, 405), (method, response.status_code)
    assert acls.acl_of(main) == before

    # The compare page shows only runs the viewer may see; none of them: 404.
    compare = f"compare?run=dash-ana/{main.id}&run=dash-ana/{other.id}"
    assert get(hub, compare, users["ana"]).status_code == 200
    assert get(hub, compare, users["ben"]).status_code == 200  # main only
    assert get(hub, f"compare?run=dash-ana/{other.id}", users["ben"]).status_code == 404
    assert get(hub, "compare", users["ana"]).status_code == 404

    # Unsharing counts at once.
    acls.unshare(main, ["dash-ben"], actor="dash-ana")
    assert get(hub, run_path(main), users["ben"]).status_code == 404


def test_a_link_works_without_login_until_revoked(hub, runs):
    main = runs["main"]
    link_id, token = acls.create_link(main, 3600, actor="dash-ana")
    page = get(hub, f"links/{token}")  # no login, no token header
    assert page.status_code == 200, page.text[:2000]
    assert "bokeh" in page.text.lower()
    assert get(hub, f"links/{token[:-2]}xx").status_code == 404
    # The link opens that run only: it is no credential for the run's own page.
    assert get(hub, run_path(main)).status_code == 302
    acls.revoke_link(main, link_id, actor="dash-ana")
    gone = get(hub, f"links/{token}")
    assert gone.status_code == 404
    assert gone.text == get(hub, "links/" + "y" * 43).text  # as a link that never was
    assert "not found" in gone.text.lower()


def test_the_usage_page_is_for_operators(hub, admin, users):
    denied = get(hub, "usage", users["ben"])
    assert denied.status_code == 403
    assert "operators" in denied.text
    allowed = get(hub, "usage", admin.token)
    assert allowed.status_code == 200, allowed.text[:2000]
    assert "bokeh" in allowed.text.lower()


def test_the_oauth_login_lands_on_the_index_with_the_users_runs(hub, admin_password, store):
    run = store.create("admin", EVIL)
    browser = HubSession(hub.url)
    assert browser.login("admin", admin_password).status_code == 302
    index = browser.http.get(f"{hub.url}{SERVICE}/", timeout=60)  # through the hub's OAuth
    assert index.status_code == 200, index.text[:2000]
    assert index.url.rstrip("/").endswith(SERVICE)
    assert html.escape(EVIL) in index.text and EVIL not in index.text
    assert f"{SERVICE}/runs/admin/{run.id}" in index.text
    page = browser.http.get(f"{hub.url}{SERVICE}/runs/admin/{run.id}", timeout=60)
    assert page.status_code == 200
    # The Bokeh session token in the page carries neither the login cookie nor headers.
    session_token = re.search(r'"token":\s*"([^"]+)"', page.text).group(1)
    payload = get_token_payload(session_token)
    assert payload["cookies"] == {} and payload["headers"] == {}
    assert "jupyterhub" not in json.dumps(payload)


def ws_connect(hub, path, origin, token=None, session_token=None):
    headers = {"Origin": origin}
    if token:
        headers["Authorization"] = f"token {token}"
    url = f"ws://127.0.0.1:{hub.port}{SERVICE}/{path}/ws"
    protocols = ["bokeh", session_token] if session_token else ["bokeh"]
    return websocket_connect(HTTPRequest(url, headers=headers), subprotocols=protocols)


def test_the_websocket_accepts_only_the_hubs_origin(hub, users, runs):
    import asyncio

    main = runs["main"]
    page = get(hub, run_path(main), users["ana"])
    session_token = re.search(r'"token":\s*"([^"]+)"', page.text).group(1)

    async def attempt(origin, token):
        try:
            conn = await ws_connect(hub, run_path(main), origin, token, session_token)
        except HTTPClientError as e:
            return e.code
        conn.close()
        return 101

    async def all_attempts():
        return (
            await attempt("http://evil.example.org", users["ana"]),
            await attempt(f"http://127.0.0.1:{hub.port}", None),  # no login
            await attempt(f"http://127.0.0.1:{hub.port}", users["ana"]),
        )

    foreign, anonymous, own = asyncio.run(all_attempts())
    assert foreign == 403
    assert anonymous == 403
    assert own == 101


def test_servers_are_told_the_runs_root_the_links_switch_and_the_url(hub, admin, users):
    spawn = admin.api("POST", "/users/dash-cy/server")
    assert spawn.status_code in (201, 202), spawn.text
    try:
        poll(lambda: admin.api("GET", "/users/dash-cy").json()["servers"].get("", {})
             .get("ready"), 90, "dash-cy's server to be ready")
        pid = admin.api("GET", "/users/dash-cy").json()["servers"][""]["state"]["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
        assert env["GPULAB_RUNS_DIR"] == str(hub.state_dir / "runs")
        assert env["GPULAB_RUN_LINKS"] == "1"
        assert env["GPULAB_DASHBOARDS_URL"].endswith("/services/dashboards/")
    finally:
        admin.api("DELETE", "/users/dash-cy/server")
    assert links_enabled({"GPULAB_RUN_LINKS": "0"}) is False
    assert links_enabled({}) is True
