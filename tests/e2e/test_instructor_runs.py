"""Instructors read their students' runs on the dashboards service (a real hub, as ``make
run`` starts it): workshop ``irw`` (instructor ir-ines; students ir-s1, ir-s2) and workshop
``irx`` (instructor ir-ivo; student ir-t1), made through the operators' workshop API;
ir-out is in no workshop.

The instructor of a workshop gets its members' run pages (200) and sees their runs on the
service's index; a run of anyone else, a student opening a classmate's run, and the
instructor of a closed workshop all get the 404 of a missing run, byte for byte.

Runs are written into the hub's runs root directly, as a training job would."""

from __future__ import annotations

import re

import pytest
import requests

from gpulab.runs import RunStore
from tests.waiting import poll
from tests.workshops.hub_helpers import logged_in, sign_up_and_approve

pytestmark = pytest.mark.e2e
SERVICE = "/services/dashboards"
MISSING = "20200101-000000-abcdef"
INSTRUCTOR_PASSWORD = "ines-teaches-2026"
PEOPLE = ("ir-ines", "ir-ivo", "ir-out", "ir-s1", "ir-s2", "ir-t1")


def create_workshop(admin, name, students, instructor):
    created = admin.api("POST", "/gpulab/workshops", json={
        "name": name, "students_csv": "username\n" + "\n".join(students) + "\n",
        "instructors": [instructor], "profiles": ["cpu"], "quota": {"max_gpus": 0},
    })
    assert created.status_code == 201, created.text


@pytest.fixture(scope="module")
def tokens(hub, admin):
    """Each person's API token (the dashboards service takes them as its login does)."""
    made = admin.api("POST", "/users", json={"usernames": ["ir-ines", "ir-ivo", "ir-out"]})
    assert made.status_code == 201, made.text
    sign_up_and_approve(hub, admin, "ir-ines", INSTRUCTOR_PASSWORD)  # for the hub's pages
    create_workshop(admin, "irw", ["ir-s1", "ir-s2"], "ir-ines")
    create_workshop(admin, "irx", ["ir-t1"], "ir-ivo")
    found = {}
    for name in PEOPLE:
        response = admin.api("POST", f"/users/{name}/tokens", json={"expires_in": 3600})
        assert response.status_code == 201, response.text
        found[name] = response.json()["token"]
    return found


@pytest.fixture(scope="module")
def runs(hub, tokens):
    store = RunStore(hub.state_dir / "runs")
    made = {}
    for owner in ("ir-s1", "ir-s2", "ir-out", "ir-t1"):
        run = store.create(owner, f"{owner}'s run")
        run.log(0, loss=1.0)
        run.flush()
        made[owner] = run
    # The service re-reads who instructs whom every few seconds (WORKSHOPS_TTL): a
    # workshop made just now reaches it within that (an earlier test may have had it
    # read the hub a moment ago).
    poll(lambda: get(hub, run_path(made["ir-s1"]), tokens["ir-ines"]).status_code == 200,
         60, "the new workshop's instructor to be granted its students' runs", every=0.5)
    return made


def get(hub, path, token):
    return requests.get(f"{hub.url}{SERVICE}/{path}", timeout=60, allow_redirects=False,
                        headers={"Authorization": f"token {token}"})


def run_path(run):
    return f"runs/{run.owner}/{run.id}"


def assert_like_missing(hub, token, run):
    """``run`` is refused to ``token``'s holder exactly as a run that does not exist."""
    denied = get(hub, run_path(run), token)
    missing = get(hub, f"runs/{run.owner}/{MISSING}", token)
    assert denied.status_code == missing.status_code == 404, denied.text[:500]
    assert denied.text == missing.text


def test_the_instructor_opens_their_students_runs_and_nothing_else(hub, tokens, runs):
    ines = tokens["ir-ines"]
    for student in ("ir-s1", "ir-s2"):
        page = get(hub, run_path(runs[student]), ines)
        assert page.status_code == 200, page.text[:1000]
        assert "bokeh" in page.text.lower()
    assert_like_missing(hub, ines, runs["ir-out"])  # in no workshop of hers
    assert_like_missing(hub, ines, runs["ir-t1"])  # another workshop's student
    # Comparing: only the runs she may see are compared; none of them is a 404.
    both = f"compare?run=ir-s1/{runs['ir-s1'].id}&run=ir-out/{runs['ir-out'].id}"
    assert get(hub, both, ines).status_code == 200
    assert get(hub, f"compare?run=ir-out/{runs['ir-out'].id}", ines).status_code == 404


def test_a_student_cannot_open_a_classmates_or_the_instructors_view(hub, tokens, runs):
    s1 = tokens["ir-s1"]
    assert get(hub, run_path(runs["ir-s1"]), s1).status_code == 200  # their own
    assert_like_missing(hub, s1, runs["ir-s2"])
    assert_like_missing(hub, tokens["ir-out"], runs["ir-s1"])
    index = get(hub, "", s1)
    assert index.status_code == 200
    assert "gpulab-students" not in index.text and runs["ir-s2"].id not in index.text


def test_the_instructors_index_lists_their_students_runs(hub, tokens, runs):
    index = get(hub, "", tokens["ir-ines"])
    assert index.status_code == 200, index.text[:1000]
    students = re.search(r"<table class='gpulab-students'>(.*?)</table>", index.text, re.S)
    assert students, index.text[:2000]
    assert runs["ir-s1"].id in students.group(1) and runs["ir-s2"].id in students.group(1)
    assert runs["ir-out"].id not in index.text and runs["ir-t1"].id not in index.text
    # ?student=NAME (the instructor page's "runs" link): that student's runs only; a name
    # outside her workshops shows nothing of theirs.
    one = get(hub, "?student=ir-s2", tokens["ir-ines"]).text
    assert runs["ir-s2"].id in one and runs["ir-s1"].id not in one
    assert runs["ir-out"].id not in get(hub, "?student=ir-out", tokens["ir-ines"]).text


def test_the_instructor_page_links_each_student_to_their_runs(hub, admin, tokens):
    ines = logged_in(hub, "ir-ines", INSTRUCTOR_PASSWORD)
    page = ines.http.get(f"{hub.url}/hub/gpulab/instructor", timeout=60)
    assert page.status_code == 200, page.text[:1000]
    for student in ("ir-s1", "ir-s2"):
        assert f'href="{SERVICE}/?student={student}">runs</a>' in page.text
    # An operator sees every workshop there, but instructs none: no "runs" links.
    operator = admin.http.get(f"{hub.url}/hub/gpulab/instructor", timeout=60)
    assert operator.status_code == 200 and 'data-student="ir-s1"' in operator.text
    assert "?student=" not in operator.text


def test_a_closed_workshops_instructor_gets_404(hub, admin, tokens, runs):
    ivo, run = tokens["ir-ivo"], runs["ir-t1"]
    assert get(hub, run_path(run), ivo).status_code == 200
    closed = admin.api("POST", "/gpulab/workshops/irx/close", json={"export_dir": None})
    assert closed.status_code == 200, closed.text
    # The service re-reads who instructs whom every few seconds (WORKSHOPS_TTL).
    poll(lambda: get(hub, run_path(run), ivo).status_code == 404, 60,
         "the closed workshop's instructor to lose the run", every=0.5)
    assert_like_missing(hub, ivo, run)
