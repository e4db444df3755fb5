"""Dask clusters in the ledger: admitted against ``max_dask_workers`` over all of a user's
servers, bound to a server's allocation and its devices, scaled, released, closed with
their server; each decision audited; atomic under concurrency. Both backends through the
``ledger`` fixture.

Helpers
- ``server(ledger, name, gpus)``: an open allocation of ada's server ``name``.
- ``start(ledger, key, workers, ...)``: ``admit_cluster`` with ada's defaults.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import update

from gpulab.gpus import StaticInventory
from gpulab.quota.accountant import Accountant
from gpulab.quota.ledger import (
    SERVER_STOPPED,
    Cluster,
    ClusterDenied,
    ClusterRequestError,
    Ledger,
    QuotaDenied,
    UnknownCluster,
)
from gpulab.quota.models import allocations
from gpulab.quota.policy import Policy
from gpulab.quota.reports import user_report
from tests.quota.conftest import DEVICES, backdate, snapshot


def server(ledger, name="", gpus=2, user="ada"):
    return ledger.admit(user=user, server=name, gpus=gpus, policy=Policy(), devices=DEVICES)


def start(ledger, key, workers=1, *, user="ada", server="", name=None, devices=(), **kw):
    kw.setdefault("max_workers", 8)
    return ledger.admit_cluster(
        user=user,
        server=server,
        key=key,
        name=key if name is None else name,
        workers=workers,
        gpus=kw.pop("gpus", len(devices)),
        devices=list(devices),
        **kw,
    )


def test_a_granted_cluster_is_recorded_with_its_allocation_and_audited(ledger):
    grant = server(ledger)
    cluster = start(ledger, "k1", 2, name="prep", devices=DEVICES[:2], actor="ada")
    assert isinstance(cluster, Cluster) and cluster.is_open
    assert (cluster.user, cluster.server, cluster.key, cluster.name) == ("ada", "", "k1", "prep")
    assert (cluster.workers, cluster.gpus, cluster.devices) == (2, 2, DEVICES[:2])
    assert cluster.allocation_id == grant.allocation_id
    assert cluster.started_at >= grant.granted_at
    assert ledger.open_clusters() == [cluster]
    assert ledger.open_clusters("ada", "") == [cluster]
    assert ledger.open_clusters("bob") == [] and ledger.open_clusters(server="x") == []
    event = ledger.audit(limit=1)[0]
    assert (event.action, event.user, event.actor) == ("cluster_granted", "ada", "ada")
    assert event.allocation_id == grant.allocation_id
    assert event.detail["cluster_id"] == cluster.id and event.detail["workers"] == 2
    assert cluster.to_json() == {
        "id": cluster.id,
        "key": "k1",
        "user": "ada",
        "server": "",
        "name": "prep",
        "workers": 2,
        "gpus": 2,
        "devices": list(DEVICES[:2]),
        "allocation_id": grant.allocation_id,
        "started_at": cluster.started_at.isoformat(),
        "stopped_at": None,
        "stop_reason": None,
    }
    json.dumps(cluster.to_json())
    assert ledger.verify() == []


def test_the_limit_message_says_the_limit_and_what_is_in_use(ledger):
    server(ledger)
    start(ledger, "k1", 4, name="prep")
    before = snapshot(ledger)
    with pytest.raises(ClusterDenied) as info:
        start(ledger, "k2", 6, name="train", actor="ada")
    e = info.value
    message = (
        "Dask workers: this cluster asks for 6 but your limit is 8 at once and 4 are in use "
        "(cluster 'prep': 4). Stop or scale down a cluster, or ask for fewer workers."
    )
    assert (str(e), e.message, e.reason, e.status_code) == (
        message,
        message,
        "max_dask_workers",
        403,
    )
    assert (e.limit, e.in_use) == (8, 4)
    assert isinstance(e, QuotaDenied)
    assert ledger.open_clusters() != [] and len(ledger.open_clusters()) == 1
    event = ledger.audit(limit=1)[0]
    assert (event.action, event.reason, event.actor) == (
        "cluster_denied",
        "max_dask_workers",
        "ada",
    )
    assert event.detail["message"] == message
    assert (event.detail["limit"], event.detail["in_use"], event.detail["workers"]) == (8, 4, 6)
    after = snapshot(ledger)
    assert after["clusters"] == before["clusters"]  # only the denial was written
    assert len(after["audit_events"]) == len(before["audit_events"]) + 1


@pytest.mark.parametrize(
    ("held", "asked", "limit", "message"),
    [
        (
            (),
            9,
            8,
            "this cluster asks for 9 but your limit is 8 at once and 0 are in use. "
            "Ask for fewer workers.",
        ),
        (
            (1,),
            8,
            8,
            "this cluster asks for 8 but your limit is 8 at once and 1 is in use "
            "(cluster 'c0': 1). Stop or scale down",
        ),
        ((3, 2), 4, 8, "and 5 are in use (clusters 'c0': 3, 'c1': 2). Stop"),
        ((), 1, 0, "your limit is 0, so you may not run Dask clusters"),
    ],
)
def test_limit_denials(ledger, held, asked, limit, message):
    server(ledger, gpus=0)
    for i, workers in enumerate(held):
        start(ledger, f"c{i}", workers, max_workers=None)
    with pytest.raises(ClusterDenied, match=re.escape(message)):
        start(ledger, "new", asked, max_workers=limit)
    assert ledger.audit(limit=1)[0].reason == "max_dask_workers"


def test_the_limit_counts_all_of_the_users_servers_and_no_one_elses(ledger):
    server(ledger, "a", gpus=0)
    server(ledger, "b", gpus=0)
    server(ledger, "a", gpus=0, user="bob")
    start(ledger, "x", 5, server="a")
    start(ledger, "y", 3, server="b")
    with pytest.raises(ClusterDenied, match="and 8 are in use"):
        start(ledger, "z", 1, server="b")
    start(ledger, "x", 8, server="a", user="bob")  # bob's limit is his own
    start(ledger, "z", 100, server="b", max_workers=None)  # None: no limit
    assert sum(c.workers for c in ledger.open_clusters("ada")) == 108


def test_a_cluster_needs_its_server_running(ledger):
    with pytest.raises(ClusterDenied) as info:
        start(ledger, "k", server="lab")
    assert (info.value.reason, info.value.status_code) == ("no_server", 409)
    assert str(info.value) == (
        "server 'lab' is not running; start it before starting a Dask cluster in it"
    )
    assert ledger.audit(limit=1)[0].action == "cluster_denied"
    grant = server(ledger)
    ledger.release(grant.allocation_id, reason="stopped")
    with pytest.raises(ClusterDenied, match="^your default server is not running"):
        start(ledger, "k")


def test_devices_must_be_the_servers_and_not_another_clusters(ledger):
    server(ledger, gpus=2)  # DEVICES[0:2]
    server(ledger, "other", gpus=2)  # DEVICES[2:4]
    with pytest.raises(ClusterDenied) as info:
        start(ledger, "k", devices=[DEVICES[1], DEVICES[2]])
    assert (info.value.reason, info.value.status_code) == ("devices", 403)
    assert str(info.value).startswith(f"your default server was not allocated {DEVICES[2]}")
    start(ledger, "gpu", devices=[DEVICES[0]], name="prep")
    with pytest.raises(ClusterDenied) as info:
        start(ledger, "k", 2, devices=DEVICES[:2])
    assert info.value.reason == "devices"
    assert str(info.value).startswith(
        f"{DEVICES[0]} is already used by cluster 'prep' of your default server"
    )
    # The other device of the server, and a CPU cluster beside it, are fine.
    start(ledger, "k", devices=[DEVICES[1]])
    start(ledger, "cpu", 2)
    server(ledger, "cpu-server", gpus=0)
    with pytest.raises(ClusterDenied, match="it holds no GPUs"):
        start(ledger, "k2", devices=[DEVICES[4]], server="cpu-server")
    assert ledger.verify() == []


def test_admission_is_idempotent_for_the_same_key_and_numbers(ledger):
    server(ledger)
    first = start(ledger, "k", 2, devices=DEVICES[:1])
    events = len(ledger.audit())
    assert start(ledger, "k", 2, devices=DEVICES[:1]) == first  # a retried request
    assert len(ledger.audit()) == events
    with pytest.raises(ClusterDenied) as info:
        start(ledger, "k", 3, devices=DEVICES[:1])
    assert (info.value.reason, info.value.status_code) == ("cluster_exists", 409)
    assert "cluster 'k' is already running in your default server with 2 workers" in str(info.value)
    ledger.release_cluster("ada", "k", reason="stopped")
    again = start(ledger, "k", 3, devices=DEVICES[:1])  # a key may be used again once closed
    assert again.id != first.id


def test_scale_within_the_limit_and_down_at_any_time(ledger):
    server(ledger, gpus=0)
    start(ledger, "a", 4, name="prep")
    b = start(ledger, "b", 2)
    scaled = ledger.scale_cluster("ada", "b", 4, max_workers=8, actor="ada")
    assert (scaled.id, scaled.workers) == (b.id, 4)
    event = ledger.audit(limit=1)[0]
    assert (event.action, event.detail["from"], event.detail["workers"]) == ("cluster_scaled", 2, 4)

    before = snapshot(ledger)["clusters"]
    with pytest.raises(ClusterDenied) as info:
        ledger.scale_cluster("ada", "b", 5, max_workers=8)
    assert str(info.value) == (
        "Dask workers: cluster 'b' asks to scale to 5 but your limit is 8 at once and 4 are in "
        "use by your other clusters (cluster 'prep': 4). Stop or scale down a cluster, or ask "
        "for fewer workers."
    )
    assert (info.value.limit, info.value.in_use, info.value.status_code) == (8, 8, 403)
    assert snapshot(ledger)["clusters"] == before
    assert ledger.audit(limit=1)[0].detail["op"] == "scale"

    # Shrinking is allowed even above a limit an operator lowered.
    assert ledger.scale_cluster("ada", "b", 3, max_workers=2).workers == 3
    events = len(ledger.audit())
    assert ledger.scale_cluster("ada", "b", 3, max_workers=2).workers == 3  # no change
    assert len(ledger.audit()) == events
    assert ledger.scale_cluster("ada", "b", 0, max_workers=0).workers == 0
    assert ledger.scale_cluster("ada", "a", 8, max_workers=8).workers == 8
    with pytest.raises(UnknownCluster, match="you have no running cluster 'nope'"):
        ledger.scale_cluster("ada", "nope", 1, max_workers=8)
    with pytest.raises(UnknownCluster):
        ledger.scale_cluster("bob", "a", 1, max_workers=8)  # not bob's


def test_release_is_idempotent(ledger):
    server(ledger, gpus=0)
    cluster = start(ledger, "k", 3)
    closed = ledger.release_cluster("ada", "k", reason="stopped by user", actor="ada")
    assert (closed.id, closed.is_open, closed.stop_reason) == (cluster.id, False, "stopped by user")
    assert closed.stopped_at >= cluster.started_at
    event = ledger.audit(limit=1)[0]
    assert (event.action, event.reason, event.detail["cluster_id"]) == (
        "cluster_released",
        "stopped by user",
        cluster.id,
    )
    assert ledger.release_cluster("ada", "k", reason="again") is None
    assert ledger.release_cluster("ada", "never", reason="x") is None
    assert ledger.open_clusters() == []
    start(ledger, "k2", 8)  # the workers are free again


def test_stopping_the_server_closes_its_clusters_in_the_same_transaction(ledger):
    lab = server(ledger, "lab", gpus=2)
    other = server(ledger, "other", gpus=0)
    start(ledger, "a", 2, server="lab", devices=DEVICES[:2])
    start(ledger, "b", 1, server="lab")
    kept = start(ledger, "c", 1, server="other")
    ledger.release(lab.allocation_id, reason="stopped", actor="hub")
    assert ledger.open_clusters() == [kept]
    closed = ledger.audit(action="cluster_released")
    assert {(e.detail["key"], e.reason, e.actor) for e in closed} == {
        ("a", SERVER_STOPPED, "hub"),
        ("b", SERVER_STOPPED, "hub"),
    }
    released = ledger.audit(action="released", limit=1)[0]
    # One transaction: one database time for the allocation and its clusters.
    assert {e.at for e in closed} == {released.at}
    ledger.release(lab.allocation_id, reason="stopped")  # again: nothing more
    assert len(ledger.audit(action="cluster_released")) == 2
    assert ledger.verify() == []
    assert other.allocation_id != lab.allocation_id


def test_reconciling_a_stale_allocation_closes_its_clusters(ledger):
    inventory = StaticInventory.synthetic(2)
    grant = server(ledger, "lab", gpus=0)
    start(ledger, "a", 2, server="lab")
    accountant = Accountant(ledger, inventory, lambda user: Policy(), reconcile_after_seconds=60)
    backdate(ledger, grant.allocation_id, 120)
    (reconciled,) = accountant.tick(set()).reconciled
    assert reconciled.end_reason == "reconciled"
    assert ledger.open_clusters() == []
    assert ledger.audit(action="cluster_released", limit=1)[0].reason == SERVER_STOPPED


BAD = [
    ({"key": ""}, "key"),
    ({"key": "a" * 65}, "key"),
    ({"key": "has space"}, "key"),
    ({"key": "dot.dot"}, "key"),
    ({"key": 7}, "key"),
    ({"workers": 0}, "workers"),
    ({"workers": -1}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"workers": True}, "workers"),
    ({"workers": "2"}, "workers"),
    ({"gpus": -1, "devices": []}, "gpus"),
    ({"gpus": 2, "devices": [DEVICES[0]]}, "gpus"),
    ({"gpus": 1, "devices": DEVICES[0]}, "devices"),
    ({"gpus": 1, "devices": [None]}, "devices"),
    ({"gpus": 2, "devices": [DEVICES[0], DEVICES[0]]}, "devices"),
    ({"name": "n" * 256}, "name"),
    ({"name": None}, "name"),
    ({"server": None}, "server"),
    ({"user": ""}, "user"),
    ({"max_workers": -1}, "max_workers"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD, ids=lambda v: repr(v)[:40])
def test_bad_arguments_name_their_field_and_change_nothing(ledger, kwargs, field):
    server(ledger)
    start(ledger, "ok", 1)
    before = snapshot(ledger)
    args = {
        "user": "ada",
        "server": "",
        "key": "k",
        "name": "n",
        "workers": 1,
        "gpus": 0,
        "devices": [],
        "max_workers": 8,
    } | kwargs
    with pytest.raises(ClusterRequestError, match=f"^{field} ") as info:
        ledger.admit_cluster(**args)
    assert info.value.field == field
    assert snapshot(ledger) == before


@pytest.mark.parametrize(("key", "workers", "field"), [("ok", -1, "workers"), ("b d", 1, "key")])
def test_bad_scale_and_release_arguments_change_nothing(ledger, key, workers, field):
    server(ledger, gpus=0)
    start(ledger, "ok", 1)
    before = snapshot(ledger)
    with pytest.raises(ClusterRequestError) as info:
        ledger.scale_cluster("ada", key, workers, max_workers=8)
    assert info.value.field == field
    if field == "key":
        with pytest.raises(ClusterRequestError):
            ledger.release_cluster("ada", key, reason="x")
    assert snapshot(ledger) == before


def test_verify_flags_an_open_cluster_of_a_closed_allocation(ledger):
    grant = server(ledger)
    cluster = start(ledger, "k", 1, devices=DEVICES[:1])
    with ledger.engine.begin() as conn:  # only raw SQL can break it
        conn.execute(
            update(allocations)
            .where(allocations.c.id == grant.allocation_id)
            .values(ended_at=grant.granted_at, end_reason="stopped")
        )
    problems = ledger.verify()
    assert (
        f"open cluster {cluster.id} belongs to allocation {grant.allocation_id}, which is not open"
        in problems
    )


def test_backup_and_restore_keep_clusters_across_backends(sqlite_ledger, postgres_ledger, tmp_path):
    server(sqlite_ledger)
    start(sqlite_ledger, "a", 2, devices=DEVICES[:1])
    start(sqlite_ledger, "b", 1)
    sqlite_ledger.release_cluster("ada", "b", reason="stopped")
    counts = sqlite_ledger.backup(tmp_path / "b.json")
    assert counts["clusters"] == 2
    assert postgres_ledger.restore(tmp_path / "b.json") == counts
    assert snapshot(postgres_ledger) == snapshot(sqlite_ledger)
    assert postgres_ledger.verify() == []
    for ledger in (sqlite_ledger, postgres_ledger):  # both go on the same way
        assert start(ledger, "c", 1).id == 3
    # A file from before the table restores no clusters.
    document = json.loads((tmp_path / "b.json").read_text())
    del document["tables"]["clusters"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    counts = postgres_ledger.restore(tmp_path / "old.json", replace=True)
    assert "clusters" not in counts and postgres_ledger.open_clusters() == []


def test_user_report_shows_clusters_and_dask_workers(ledger):
    server(ledger, gpus=0)
    cluster = start(ledger, "k", 3)
    report = user_report(ledger, "ada", Policy(max_dask_workers=8), warnings=[])
    assert report["clusters"] == [cluster.to_json()]
    assert report["dask_workers"] == {"limit": 8, "in_use": 3}
    assert user_report(ledger, "bob", Policy(), [])["dask_workers"] == {"limit": None, "in_use": 0}


# concurrency --------------------------------------------------------------------------

THREADS = 8
ROUNDS = 3


@pytest.mark.timeout(120)
def test_racing_admissions_never_exceed_the_limit(ledger_url):
    """8 threads, each with its own Ledger (as if 8 processes), race to start 3-worker
    clusters on two of ada's servers under a limit of 10: exactly 3 win, every time."""
    ledgers = [Ledger(ledger_url, busy_timeout=60) for _ in range(THREADS)]
    try:
        server(ledgers[0], "a", gpus=0)
        server(ledgers[0], "b", gpus=0)
        for round_ in range(ROUNDS):
            barrier = threading.Barrier(THREADS)

            def one(i: int, round_=round_, barrier=barrier) -> Cluster | ClusterDenied:
                barrier.wait(timeout=60)
                try:
                    return start(
                        ledgers[i],
                        f"r{round_}-{i}",
                        3,
                        server="ab"[i % 2],
                        max_workers=10,
                    )
                except ClusterDenied as denial:
                    return denial

            with ThreadPoolExecutor(max_workers=THREADS) as pool:
                outcomes = list(pool.map(one, range(THREADS)))
            won = [o for o in outcomes if isinstance(o, Cluster)]
            lost = [o for o in outcomes if isinstance(o, ClusterDenied)]
            assert len(won) == 3 and len(lost) == THREADS - 3, f"round {round_}"
            assert {(d.reason, d.limit, d.in_use) for d in lost} == {("max_dask_workers", 10, 9)}
            assert sorted(c.id for c in ledgers[0].open_clusters("ada")) == sorted(
                c.id for c in won
            )
            assert ledgers[0].verify() == []
            for cluster in won:
                assert ledgers[round_].release_cluster("ada", cluster.key, reason="done")
            assert ledgers[0].open_clusters() == []
    finally:
        for ledger in ledgers:
            ledger.close()
