"""gpulab.dashboards.pages: grants checked through the store, link tokens found, live views
that stop once access is revoked, and the escaped landing page (no hub, no browser)."""

import html

import pytest

from gpulab.dashboards.data import RunData
from gpulab.dashboards.pages import (
    GONE_TEXT,
    Grant,
    GuardedCompareView,
    GuardedRunView,
    compare_page,
    find_link,
    index_html,
    parse_run_refs,
)
from gpulab.runs import RunNotFound, RunStore
from gpulab.runs import acl as acls

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def run(store):
    run = store.create("ana", EVIL)
    for step in range(5):
        run.log(step, loss=1.0 / (step + 1))
    run.flush()
    return run


def test_a_grant_is_checked_by_the_store_every_time(store, run):
    owner = Grant("ana", run.id, user="ana")
    ben = Grant("ana", run.id, user="ben")
    assert owner.check(store).id == run.id
    assert not ben.allowed(store)
    with pytest.raises(RunNotFound, match="may not view"):
        Grant("ana", "20200101-000000-abcdef", user="ana").check(store)
    acls.share_with(run, groups=["physics"], actor="ana")
    assert Grant("ana", run.id, user="ben", groups=("physics",)).allowed(store)


def test_a_link_token_names_its_run_and_works_until_revoked(store, run):
    link_id, token = acls.create_link(run, 60, actor="ana")
    grant = find_link(store, token)
    assert (grant.owner, grant.run_id, grant.user, grant.token) == ("ana", run.id, None, token)
    assert grant.allowed(store)
    assert find_link(store, "x" * 43) is None
    assert find_link(store, "short") is None
    acls.revoke_link(run, link_id, actor="ana")
    assert find_link(store, token) == grant  # it still names the run ...
    assert not grant.allowed(store)  # ... but opens it no more


def test_a_live_view_stops_once_access_is_revoked(store, run):
    acls.share_with(run, ["ben"], actor="ana")
    grant = Grant("ana", run.id, user="ben")
    view = GuardedRunView(store, grant, data=RunData(run))
    source = view._lines["loss"].source
    run.log(5, loss=0.1)
    run.flush()
    view.refresh()
    assert max(source.data["x"]) == 5 and not view.revoked
    acls.unshare(run, ["ben"], actor="ana")
    run.log(6, loss=0.05)
    run.flush()
    view.refresh()
    assert view.revoked
    assert max(source.data["x"]) == 5  # nothing read after the unshare
    assert GONE_TEXT in view._outer.objects[0].object


def test_compare_shows_only_visible_runs_and_stops_on_revocation(store, run):
    other = store.create("ana", "other")
    other.log(0, loss=1.0)
    other.flush()
    mine = store.create("ben", "mine")
    mine.log(0, loss=2.0)
    mine.flush()
    grants = [Grant(o, r, user="ben") for o, r in parse_run_refs(
        [f"ana/{run.id}", f"ben/{mine.id}", "ana/bad-id", "nobody"])]
    acls.share_with(run, ["ben"], actor="ana")
    page = compare_page(store, grants)
    assert isinstance(page, GuardedCompareView)
    assert [d.run.id for d in page.data.data] == [run.id, mine.id]
    acls.unshare(run, ["ben"], actor="ana")
    page.refresh()
    assert page.revoked and GONE_TEXT in page._outer.objects[0].object
    assert "Not found" in compare_page(store, grants[2:]).object


def test_the_index_escapes_names_and_links_each_run(store, run):
    page = index_html("ana", store.list_runs("ana"), [], "/services/dashboards/",
                      operator=False)
    assert EVIL not in page and html.escape(EVIL) in page
    assert f"href='/services/dashboards/runs/ana/{run.id}'" in page
    assert "usage" not in page
    assert "/services/dashboards/usage" in index_html("a", [], [], "/services/dashboards/",
                                                      operator=True)
