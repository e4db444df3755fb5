"""The authorisation matrix of workshops, every cell through the real hub's REST API and
pages: two workshops (w1: students s1a, s1b, instructor ingrid; w2: student s2a,
instructor ivan) made with ``gpulab workshop create`` on the GPU test hub.

Denied cells must not tell a forbidden object from a missing one: the same status and
body for a user that exists and one that does not (``assert_same_denial``).
"""

from __future__ import annotations

import csv
import json
import os
import stat
from urllib.parse import quote

import pytest
import requests

from tests.e2e.harness import HubSession
from tests.waiting import poll
from tests.workshops.hub_helpers import logged_in, run_workshop_cli, sign_up_and_approve

pytestmark = pytest.mark.e2e
INSTRUCTOR_PASSWORD = "instructor-pass-2026"
OPEN_S1B, OPEN_S2A = "access:servers!user=s1b", "access:servers!user=s2a"


def token_for(admin, name):
    response = admin.api("POST", f"/users/{name}/tokens", json={"expires_in": 3600})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def as_token(hub, token) -> HubSession:
    session = HubSession(hub.url)
    session.token = token
    return session


@pytest.fixture(scope="module")
def classes(gpu_hub, gpu_admin, tmp_path_factory):
    """The two workshops; each person's API session, and the students' passwords."""
    folder = tmp_path_factory.mktemp("workshops")
    created = gpu_admin.api("POST", "/users", json={"usernames": ["ingrid", "ivan"]})
    assert created.status_code == 201, created.text
    sign_up_and_approve(gpu_hub, gpu_admin, "ingrid", INSTRUCTOR_PASSWORD)
    passwords = {}
    for name, students, instructor in (("w1", "S1a\ns1b\n", "ingrid"), ("w2", "s2a\n", "ivan")):
        roster = folder / f"{name}.csv"
        roster.write_text(f"username,email\n{students}")
        out = folder / f"{name}-passwords.csv"
        done = run_workshop_cli(
            gpu_hub, "create", name, "--students", str(roster), "--instructors", instructor,
            "--profile", "cpu,1-gpu", "--quota", "max_gpus=1", "gpu_hours=2", "window=1d",
            "--passwords-out", str(out),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        with out.open() as f:
            passwords.update({row["username"]: row["password"] for row in csv.DictReader(f)})
    sessions = {name: as_token(gpu_hub, token_for(gpu_admin, name)) for name in
                ("s1a", "s1b", "s2a", "ingrid", "ivan")}  # fmt: skip
    sessions["admin"] = gpu_admin
    return {"sessions": sessions, "passwords": passwords, "folder": folder}


def assert_same_denial(session, method, path, other_path, **kwargs):
    """``path`` (an object that exists) is denied exactly like ``other_path`` (none)."""
    denied = session.api(method, path, **kwargs)
    missing = session.api(method, other_path, **kwargs)
    assert denied.status_code in (403, 404), (path, denied.status_code, denied.text)
    assert (denied.status_code, denied.json()) == (missing.status_code, missing.json()), path
    return denied


def test_the_cli_made_accounts_that_log_in_with_their_one_time_password(gpu_hub, classes):
    assert sorted(classes["passwords"]) == ["s1a", "s1b", "s2a"]  # "S1a" normalised
    logged_in(gpu_hub, "s1a", classes["passwords"]["s1a"])
    wrong = HubSession(gpu_hub.url).login("s1b", classes["passwords"]["s1a"])
    assert wrong.status_code == 200 and "Invalid username or password" in wrong.text


def test_student_to_other_student_and_to_instructor(classes):
    s1a = classes["sessions"]["s1a"]
    assert s1a.api("GET", "/users/s1a").status_code == 200
    for other in ("s1b", "s2a", "ingrid"):
        assert_same_denial(s1a, "GET", f"/users/{other}", "/users/nobody-here")
        assert_same_denial(s1a, "POST", f"/users/{other}/server", "/users/nobody-here/server")
        assert_same_denial(s1a, "DELETE", f"/users/{other}/server", "/users/nobody-here/server")
    assert_same_denial(s1a, "GET", "/groups/w1", "/groups/no-such-group")
    listed = s1a.api("GET", "/users")
    assert listed.status_code in (200, 403)
    if listed.status_code == 200:
        assert [u["name"] for u in listed.json()] == ["s1a"]


def test_instructor_reads_starts_opens_and_stops_their_students_servers(gpu_hub, classes):
    ingrid = classes["sessions"]["ingrid"]
    listed = ingrid.api("GET", "/users")
    assert listed.status_code == 200, listed.text
    assert sorted(u["name"] for u in listed.json()) == ["s1a", "s1b"]
    assert ingrid.api("GET", "/users/s1b").json()["groups"] == ["w1"]

    started = ingrid.api("POST", "/users/s1b/server", json={"profile": "cpu"})
    assert started.status_code in (201, 202), started.text
    poll(lambda: ingrid.api("GET", "/users/s1b").json()["servers"].get("", {}).get("ready"),
         90, "s1b's server to be ready")  # fmt: skip
    # Servers resolve no group filters themselves (jupyterhub.services.auth.check_scopes):
    # the instructor opens a student's server with a token (or, in a browser, an OAuth
    # grant) that names that server; the hub resolves the group when it issues it.
    scoped = ingrid.api("POST", "/users/ingrid/tokens", json={"scopes": [OPEN_S1B]})
    assert scoped.status_code == 201, scoped.text
    opened = as_token(gpu_hub, scoped.json()["token"]).get_as_user("/user/s1b/api/status")
    assert opened.status_code == 200, opened.text[:500]
    other = ingrid.api("POST", "/users/ingrid/tokens", json={"scopes": [OPEN_S2A]})
    assert other.status_code == 400 and "not held" in other.json()["message"], other.text
    stopped = ingrid.api("DELETE", "/users/s1b/server")
    assert stopped.status_code in (202, 204), stopped.text
    poll(lambda: ingrid.api("GET", "/users/s1b").json()["servers"] == {}, 60, "s1b stopped")


def test_a_student_can_only_spawn_the_workshop_profiles(classes):
    admin = classes["sessions"]["admin"]
    denied = admin.api("POST", "/users/s1a/server", json={"profile": "2-gpus"})
    assert denied.status_code == 400, denied.text
    assert "2-gpus" in denied.json()["message"]


def test_instructor_to_other_group(classes):
    ingrid = classes["sessions"]["ingrid"]
    for method, suffix in (("GET", ""), ("POST", "/server"), ("DELETE", "/server")):
        assert_same_denial(ingrid, method, f"/users/s2a{suffix}", f"/users/nobody-here{suffix}")
    assert_same_denial(ingrid, "GET", "/users/ivan", "/users/nobody-here")
    assert_same_denial(ingrid, "GET", "/groups/w2", "/groups/no-such-group")
    assert ingrid.get_as_user("/user/s2a/api/status").status_code in (403, 404, 503)


def test_instructor_cannot_raise_their_own_or_anyones_role_group_or_quota(gpu_hub, classes):
    ingrid = classes["sessions"]["ingrid"]
    for path, body in (
        ("/users/ingrid", {"admin": True}),
        ("/users/s1a", {"admin": True}),
        ("/users/s1a", {"name": "ingrid2"}),
    ):
        assert ingrid.api("PATCH", path, json=body).status_code == 403, path
    for group in ("w1", "w2"):
        joined = ingrid.api("POST", f"/groups/{group}/users", json={"users": ["ingrid"]})
        assert joined.status_code in (403, 404), group
    emptied = ingrid.api("PUT", "/groups/w1/properties", json={})
    assert emptied.status_code in (403, 404), emptied.text
    token = ingrid.api("POST", "/users/ingrid/tokens", json={"scopes": ["admin:users"]})
    assert token.status_code in (400, 403) and "not held" in token.json()["message"], token.text
    policy = requests.put(
        f"{gpu_hub.url}/services/gpulab-quota/api/policies/groups/w1",
        headers={"Authorization": f"token {ingrid.token}"},
        data=json.dumps({"gpu_hours": 1000}),
        timeout=30,
    )
    assert policy.status_code == 403, policy.text
    for path in ("/gpulab/workshops", "/gpulab/workshops/w1/close"):
        refused = ingrid.api("POST", path, json={})
        assert refused.status_code == 403, refused.text
        assert "operators" in refused.json()["message"]
    # Nothing changed: still not an admin, still in no group, w1's policy unchanged.
    me = classes["sessions"]["admin"].api("GET", "/users/ingrid").json()
    assert me["admin"] is False and me["groups"] == []
    assert me["roles"] == ["instructor-w1", "user"] or sorted(me["roles"]) == [
        "instructor-w1",
        "user",
    ]


def test_operator_reaches_anyone(classes):
    admin = classes["sessions"]["admin"]
    for name in ("s1a", "s2a", "ingrid", "ivan"):
        assert admin.api("GET", f"/users/{name}").status_code == 200
    workshops = admin.api("GET", "/gpulab/workshops")
    assert workshops.status_code == 200
    by_name = {w["name"]: w for w in workshops.json()["workshops"]}
    assert by_name["w1"]["students"] == ["s1a", "s1b"]
    assert by_name["w1"]["instructors"] == ["ingrid"]
    assert by_name["w2"]["profiles"] == ["cpu", "1-gpu"]


def test_the_instructor_page_shows_only_their_students_and_stops_only_them(gpu_hub, classes):
    ingrid = logged_in(gpu_hub, "ingrid", INSTRUCTOR_PASSWORD)
    page = ingrid.http.get(f"{gpu_hub.url}/hub/gpulab/instructor", timeout=30)
    assert page.status_code == 200
    assert 'data-student="s1a"' in page.text and 'data-student="s1b"' in page.text
    assert "s2a" not in page.text and 'data-workshop="w2"' not in page.text

    def stop(session, name, xsrf=True):
        data = {"action": "stop", "user": name}
        if xsrf:
            data["_xsrf"] = session.http.cookies.get("_xsrf")
        return session.http.post(
            f"{gpu_hub.url}/hub/gpulab/instructor", data=data, allow_redirects=False, timeout=60
        )

    forbidden, missing = stop(ingrid, "s2a"), stop(ingrid, "nobody-here")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.text.replace("s2a", "X") == missing.text.replace("nobody-here", "X")
    assert stop(ingrid, "s1a", xsrf=False).status_code == 403
    assert stop(ingrid, "s1a").status_code == 303

    s1a = logged_in(gpu_hub, "s1a", classes["passwords"]["s1a"])
    theirs = s1a.http.get(f"{gpu_hub.url}/hub/gpulab/instructor", timeout=30)
    assert theirs.status_code == 200 and "gpulab-student" not in theirs.text
    assert stop(s1a, "s1b").status_code == 404

    anonymous = requests.get(
        f"{gpu_hub.url}/hub/gpulab/instructor", allow_redirects=False, timeout=30
    )
    assert anonymous.status_code == 302 and "/hub/login" in anonymous.headers["Location"]


def test_bad_rosters_are_refused_whole_with_their_lines(gpu_hub, classes):
    roster = classes["folder"] / "bad.csv"
    roster.write_text("username\nnew1\ns1a\nbad name\nNEW1\n")
    done = run_workshop_cli(
        gpu_hub, "create", "w3", "--students", str(roster), "--instructors", "ingrid",
        "--profile", "cpu",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "line 3: 's1a' is an existing user" in done.stderr
    assert "line 4:" in done.stderr
    assert "line 5: 'NEW1' (as 'new1') duplicates line 2" in done.stderr
    admin = classes["sessions"]["admin"]
    assert admin.api("GET", "/users/new1").status_code == 404
    assert admin.api("GET", "/groups/w3").status_code == 404


def test_close_stops_archives_and_disables(gpu_hub, classes):
    admin, sessions = classes["sessions"]["admin"], classes["sessions"]
    started = admin.api("POST", "/users/s2a/server", json={"profile": "cpu"})
    assert started.status_code in (201, 202), started.text
    poll(lambda: admin.api("GET", "/users/s2a").json()["servers"].get("", {}).get("ready"),
         90, "s2a's server")  # fmt: skip
    export = classes["folder"] / "w2-export"
    done = run_workshop_cli(gpu_hub, "close", "w2", "--export", str(export))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped 1 servers: s2a" in done.stdout
    archive = export / "s2a.tar.gz"
    assert archive.is_file() and stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert admin.api("GET", "/users/s2a").json()["servers"] == {}
    # The one-time password no longer logs in; the student's token is gone.
    refused = HubSession(gpu_hub.url).login("s2a", classes["passwords"]["s2a"])
    assert refused.status_code == 200 and "has not been authorized" in refused.text
    assert sessions["s2a"].api("GET", "/users/s2a").status_code == 403
    # The instructor of w2 no longer sees its students.
    assert_same_denial(sessions["ivan"], "GET", "/users/s2a", "/users/nobody-here")
    again = run_workshop_cli(gpu_hub, "close", "no-such-workshop")
    assert again.returncode == 2 and "no workshop named" in again.stderr


def test_refusals_logged_no_traceback_from_the_workshop_code(gpu_hub, classes):
    # Every refusal above is an expected answer, not an error of the hub.
    assert "gpulab_hub/workshops" not in gpu_hub.output


def test_operators_see_every_workshop_on_the_page_with_names_escaped(gpu_hub, classes):
    admin = classes["sessions"]["admin"]
    # A group an operator made by hand, named with markup, marked as a workshop.
    name = quote("x<b>y</b>", safe="")
    assert admin.api("POST", f"/groups/{name}").status_code == 201
    settings = {"gpulab_workshop": {"instructors": [], "profiles": ["<i>cpu</i>"]}}
    assert admin.api("PUT", f"/groups/{name}/properties", json=settings).status_code == 200
    page = admin.http.get(f"{gpu_hub.url}/hub/gpulab/instructor", timeout=30)
    assert page.status_code == 200
    assert 'data-workshop="w1"' in page.text
    assert "x&lt;b&gt;y&lt;/b&gt;" in page.text and "&lt;i&gt;cpu&lt;/i&gt;" in page.text
    assert "<b>y" not in page.text and "<i>cpu" not in page.text
