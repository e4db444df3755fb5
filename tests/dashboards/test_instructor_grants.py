"""Instructors' access to their students' runs, without a hub: ``Grant.instructs`` (asked at
every check, so a closed workshop stops an open dashboard), the same ``RunNotFound`` as a
missing run otherwise, and who instructs whom from the hub's user models
(``students_by_instructor``). The e2e test (tests/e2e/test_instructor_runs.py) runs it
through a real hub."""

import pytest

from gpulab.dashboards.data import RunData
from gpulab.dashboards.pages import GONE_TEXT, Grant, GuardedRunView, index_html
from gpulab.runs import RunNotFound, RunStore
from gpulab_hub.dashboards_service import students_by_instructor


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def run(store):
    run = store.create("stu", "homework <b>1</b>")
    run.log(0, loss=1.0)
    run.flush()
    return run


class Roster:
    """What the service's ``Workshops.instructs`` answers: a set it can change."""

    def __init__(self, pairs):
        self.pairs = set(pairs)

    def instructs(self, viewer, owner):
        return (viewer, owner) in self.pairs


def test_an_instructor_views_their_students_runs_and_nothing_else(store, run):
    roster = Roster({("ines", "stu")})
    assert Grant("stu", run.id, user="ines", instructs=roster.instructs).check(store).id == run.id
    other = store.create("out", "not a student")
    refused = Grant("out", other.id, user="ines", instructs=roster.instructs)
    missing = Grant("stu", "20200101-000000-abcdef", user="ines", instructs=roster.instructs)
    malformed = Grant("stu", "../../etc", user="ines", instructs=roster.instructs)
    messages = []
    for grant in (refused, missing, malformed):
        with pytest.raises(RunNotFound) as info:
            grant.check(store)
        messages.append(str(info.value))
    assert len(set(messages)) == 1  # forbidden, missing and malformed: one answer
    # A student of the same class is no instructor; a link viewer has no hub user.
    assert not Grant("stu", run.id, user="stu2", instructs=roster.instructs).allowed(store)
    assert not Grant("stu", run.id, token="x" * 40, instructs=lambda *_: True).allowed(store)


def test_an_open_dashboard_stops_when_the_workshop_closes(store, run):
    roster = Roster({("ines", "stu")})
    view = GuardedRunView(store, Grant("stu", run.id, user="ines", instructs=roster.instructs),
                          data=RunData(run))
    view.refresh()
    assert not view.revoked
    roster.pairs.clear()  # the workshop's instructor role is gone
    view.refresh()
    assert view.revoked and GONE_TEXT in view._outer.objects[0].object


def test_students_come_from_the_instructor_role_and_the_group():
    users = [
        {"name": "ines", "groups": [], "roles": ["user", "instructor-w1"]},
        {"name": "ivo", "groups": ["w1"], "roles": ["user", "instructor-w2"]},
        {"name": "s1", "groups": ["w1"], "roles": ["user"]},
        {"name": "s2", "groups": ["w1", "physics"], "roles": ["user"]},
        {"name": "t1", "groups": ["w2"], "roles": ["user"]},
        {"name": "out", "groups": ["physics"], "roles": ["user", "instructors-x"]},
        {"name": "closed", "groups": [], "roles": ["instructor-gone"]},  # group deleted
    ]
    assert students_by_instructor(users) == {
        "ines": frozenset({"ivo", "s1", "s2"}),
        "ivo": frozenset({"t1"}),  # a member of w1 too, but not w1's instructor
    }


def test_the_index_lists_students_runs_only_for_an_instructor(store, run):
    base = "/services/dashboards/"
    assert "Your students" not in index_html("stu", [], [], base, operator=False)
    page = index_html("ines", [], [], base, operator=False, students=store.list_runs("stu"))
    assert "Your students' runs" in page and run.id in page
    assert "homework &lt;b&gt;1&lt;/b&gt;" in page and "<b>1</b>" not in page
