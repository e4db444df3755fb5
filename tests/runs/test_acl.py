"""Run ACLs on real files: owner, shares with users and groups, view-only links (expiry,
revocation), refusals that write nothing, one 404 for missing and forbidden runs."""

import json
import threading
import time
from pathlib import Path

import pytest

from gpulab.runs import InvalidRunInput, PermissionDenied, RunError, RunNotFound, can_view
from gpulab.runs.acl import ACL, MAX_LINK_SECONDS, hash_token
from tests.runs.conftest import all_files


@pytest.fixture
def run(store):
    return store.create("alice", "mlp")


def acl_bytes(run):
    path = Path(run.folder.path, ACL)
    return path.read_bytes() if path.exists() else None


def test_owner_can_view_a_private_run(store, run):
    assert run.acl().owner == "alice"
    assert run.acl().users == [] and run.acl().groups == [] and run.acl().links == []
    assert run.can_view("alice")
    assert store.viewable("alice", run.id, "alice").id == run.id
    assert acl_bytes(run) is None  # reading writes nothing


def test_stranger_gets_the_same_error_as_for_a_missing_run(store, run):
    assert not run.can_view("bob")
    assert not run.can_view(None)
    errors = []
    for owner, run_id in [("alice", run.id),                    # exists, no access
                          ("alice", "20200101-000000-abcdef"),   # no such run
                          ("nobody", run.id),                    # no such owner
                          ("../etc", "passwd")]:                 # malformed
        with pytest.raises(RunNotFound) as caught:
            store.viewable(owner, run_id, "bob", ["staff"])
        errors.append((str(caught.value), caught.value.reason, caught.value.status_code))
    assert len(set(errors)) == 1
    assert errors[0][2] == 404
    assert run.id not in errors[0][0] and "alice" not in errors[0][0]


def test_share_with_a_user_then_unshare(store, run):
    run.share_with(users=["bob"], actor="alice")
    assert run.acl().users == ["bob"]
    assert run.can_view("bob") and not run.can_view("carol")
    assert store.viewable("alice", run.id, "bob").id == run.id
    run.unshare(users=["bob"], actor="alice")
    assert not run.can_view("bob")
    with pytest.raises(RunNotFound):
        store.viewable("alice", run.id, "bob")


def test_share_with_a_group_then_unshare(store, run):
    run.share_with(groups=["workshop-2026"], actor="alice")
    assert run.can_view("bob", groups=["other", "workshop-2026"])
    assert run.can_view("bob", groups="workshop-2026")
    assert not run.can_view("bob", groups=["other"])
    assert store.viewable("alice", run.id, "dave", ["workshop-2026"]).id == run.id
    run.unshare(groups=["workshop-2026"], actor="alice")
    assert not run.can_view("bob", groups=["workshop-2026"])


def test_a_share_grants_only_that_run(store, run):
    other = store.create("alice", "private one")
    run.share_with(users=["bob"], groups=["lab"], actor="alice")
    assert run.can_view("bob")
    assert not other.can_view("bob") and not other.can_view("x", groups=["lab"])
    with pytest.raises(RunNotFound):
        store.viewable("alice", other.id, "bob", ["lab"])
    assert [m.id for m in store.shared_with("bob")] == [run.id]
    assert [m.id for m in store.shared_with("eve", ["lab"])] == [run.id]
    assert store.shared_with("eve") == []
    assert store.shared_with("alice", ["lab"]) == []  # one's own runs aren't "shared with"


def test_shared_with_lists_runs_of_several_owners(store, run):
    carols = store.create("carol", "c")
    run.share_with(users=["bob"], actor="alice")
    carols.share_with(groups=["lab"], actor="carol")
    assert {m.id for m in store.shared_with("bob", ["lab"])} == {run.id, carols.id}


@pytest.mark.parametrize("actor", ["bob", "", None, "ALICE", "alice "])
def test_only_the_owner_changes_the_acl(run, actor):
    run.share_with(users=["bob"], actor="alice")
    link_id, _ = run.create_link(3600, actor="alice")
    before = acl_bytes(run)
    changes = [
        lambda: run.share_with(users=["mallory"], actor=actor),
        lambda: run.unshare(users=["bob"], actor=actor),
        lambda: run.create_link(3600, actor=actor),
        lambda: run.revoke_link(link_id, actor=actor),
    ]
    for change in changes:
        with pytest.raises(PermissionDenied, match="only the owner") as caught:
            change()
        assert caught.value.status_code == 403
    assert acl_bytes(run) == before
    assert run.acl().owner == "alice"


def test_the_owner_is_the_manifests_not_the_files(run):
    run.share_with(users=["bob"], actor="alice")
    path = Path(run.folder.path, ACL)
    data = json.loads(path.read_text())
    data["owner"] = "mallory"
    path.write_text(json.dumps(data))
    assert run.acl().owner == "alice"
    with pytest.raises(PermissionDenied):
        run.share_with(users=["eve"], actor="mallory")
    assert not run.can_view("mallory")


def test_link_token_views_and_other_tokens_dont(store, run):
    link_id, token = run.create_link(3600, actor="alice")
    assert len(token) >= 43 and len(link_id) == 12
    assert run.can_view(token=token)
    assert store.viewable("alice", run.id, None, (), token).id == run.id
    assert not run.can_view(token=token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not run.can_view(token="")
    assert not run.can_view(token=hash_token(token))  # the stored hash is not a token
    with pytest.raises(RunNotFound):
        store.viewable("alice", run.id, None, (), "not-the-token")


def test_link_token_is_not_stored(run):
    link_id, token = run.create_link(3600, actor="alice")
    raw = acl_bytes(run).decode()
    assert token not in raw
    (link,) = json.loads(raw)["links"]
    assert set(link) == {"id", "token_hash", "created", "expires", "revoked"}
    assert link["id"] == link_id and link["revoked"] is None
    assert link["token_hash"] == hash_token(token)
    public = run.acl().public_json()
    assert "token_hash" not in public["links"][0] and public["links"][0]["active"]


def test_link_expires(run):
    start = time.time()
    _, token = run.create_link(60, actor="alice", now=start)
    assert run.can_view(token=token, now=start + 59)
    assert not run.can_view(token=token, now=start + 61)


def test_revoked_link_stops_at_once(store, run):
    link_id, token = run.create_link(3600, actor="alice")
    other_id, other_token = run.create_link(3600, actor="alice")
    viewer = store.open("alice", run.id)  # another handle, as a server would hold
    assert viewer.can_view(token=token)
    run.revoke_link(link_id, actor="alice")
    assert not viewer.can_view(token=token)
    assert viewer.can_view(token=other_token)  # only that link
    with pytest.raises(RunNotFound):
        store.viewable("alice", run.id, None, (), token)
    run.revoke_link(link_id, actor="alice")  # twice is harmless
    with pytest.raises(RunNotFound, match="no link"):
        run.revoke_link("0" * 12, actor="alice")
    assert other_id != link_id


def test_links_refused_when_disabled(run):
    before = acl_bytes(run)
    with pytest.raises(PermissionDenied, match="turned off") as caught:
        run.create_link(3600, actor="alice", allowed=False)
    assert caught.value.status_code == 403
    assert acl_bytes(run) == before


@pytest.mark.parametrize("seconds", [0, -1, MAX_LINK_SECONDS + 1, float("inf"), float("nan"),
                                     True, "3600", None])
def test_bad_link_expiry_is_refused(run, seconds):
    with pytest.raises(InvalidRunInput, match="expires in"):
        run.create_link(seconds, actor="alice")
    assert acl_bytes(run) is None


def test_longest_link_is_allowed(run):
    start = time.time()
    _, token = run.create_link(MAX_LINK_SECONDS, actor="alice", now=start)
    assert run.can_view(token=token, now=start + MAX_LINK_SECONDS - 1)


BAD_NAMES = ["../x", "", "a\x00b", ".hidden", "a/b", "x" * 129, "<img src=x>", None, 7]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_user_and_group_names_write_nothing(store, run, name):
    before = all_files(store.root.path)
    with pytest.raises(InvalidRunInput, match="user name"):
        run.share_with(users=["bob", name], actor="alice")
    with pytest.raises(InvalidRunInput, match="group name"):
        run.share_with(groups=["lab", name], actor="alice")
    with pytest.raises(InvalidRunInput):
        run.unshare(users=[name], actor="alice")
    assert all_files(store.root.path) == before
    assert run.acl().users == []


def test_names_must_be_a_list(run):
    with pytest.raises(InvalidRunInput, match="list of names"):
        run.share_with(users="bob", actor="alice")


def test_bad_link_id_is_refused(run):
    with pytest.raises(InvalidRunInput, match="link id"):
        run.revoke_link("../acl.json", actor="alice")


def test_concurrent_shares_lose_no_update(run):
    names = [f"user{i}" for i in range(40)]
    barrier = threading.Barrier(len(names))
    failures = []

    def share(name):
        try:
            barrier.wait()
            run.share_with(users=[name], actor="alice")
        except Exception as e:  # pragma: no cover - reported below
            failures.append(e)

    threads = [threading.Thread(target=share, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert run.acl().users == sorted(names)


def test_unreadable_acl_fails_closed(run):
    run.share_with(users=["bob"], actor="alice")
    path = Path(run.folder.path, ACL)
    path.write_text("{not json")
    assert run.can_view("alice") and not run.can_view("bob")
    with pytest.raises(RunError, match="unreadable") as caught:
        run.share_with(users=["carol"], actor="alice")
    assert caught.value.status_code == 500
    assert path.read_text() == "{not json"


def test_can_view_takes_an_acl(run):
    run.share_with(users=["bob"], actor="alice")
    acl = run.acl()
    assert can_view(acl, "bob") and not can_view(acl, "carol")


def test_acl_on_memory_store(memory_store):
    run = memory_store.create("alice", "m")
    run.share_with(users=["bob"], actor="alice")
    assert run.can_view("bob")
    assert [m.id for m in memory_store.shared_with("bob")] == [run.id]
    with pytest.raises(RunNotFound):
        memory_store.viewable("alice", run.id, "carol")
