"""200 simultaneous admissions for 8 GPUs, three rounds, on SQLite and on PostgreSQL.

The 200 threads share 8 Ledger objects (8 engines, as if 8 hub processes): inside one
Ledger, writers queue on a mutex; between Ledgers only the database's lock (BEGIN
IMMEDIATE / the advisory lock) keeps them apart, so this exercises the database side.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpulab.quota.ledger import Grant, Ledger, QuotaDenied
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES

REQUESTS = 200
ENGINES = 8
ROUNDS = 3


def burst(ledgers: list[Ledger], round_: int) -> list[Grant | QuotaDenied]:
    barrier = threading.Barrier(REQUESTS)

    def one(i: int) -> Grant | QuotaDenied:
        ledger = ledgers[i % len(ledgers)]
        barrier.wait(timeout=60)
        try:
            return ledger.admit(
                user=f"user{i}", server=f"r{round_}", gpus=1, policy=Policy(), devices=DEVICES
            )
        except QuotaDenied as e:
            return e

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        return list(pool.map(one, range(REQUESTS)))


@pytest.mark.timeout(120)
def test_burst_grants_exactly_the_free_devices(ledger_url):
    per_engine = REQUESTS // ENGINES + 1
    ledgers = [Ledger(ledger_url, pool_size=per_engine, busy_timeout=60) for _ in range(ENGINES)]
    try:
        for round_ in range(ROUNDS):
            [last_event] = ledgers[0].audit(limit=1) or [None]
            since = last_event.id if last_event else 0

            outcomes = burst(ledgers, round_)

            grants = [o for o in outcomes if isinstance(o, Grant)]
            denials = [o for o in outcomes if isinstance(o, QuotaDenied)]
            assert len(grants) == len(DEVICES), f"round {round_}"
            handed_out = [uuid for g in grants for uuid in g.device_uuids]
            assert sorted(handed_out) == sorted(DEVICES)  # each device once, none twice
            assert len(denials) == REQUESTS - len(DEVICES)
            assert {(d.reason, d.status_code) for d in denials} == {("capacity", 409)}
            assert {str(d) for d in denials} == {"all 8 GPUs are in use"}

            events = ledgers[0].audit(since_id=since, limit=10 * REQUESTS)
            assert Counter(e.action for e in events) == {
                "granted": len(DEVICES),
                "denied": REQUESTS - len(DEVICES),
            }
            assert {e.user for e in events} == {f"user{i}" for i in range(REQUESTS)}
            granted_events = {e.allocation_id for e in events if e.action == "granted"}
            assert granted_events == {g.allocation_id for g in grants}
            assert ledgers[0].verify() == []

            for grant in grants:  # free the node for the next round
                ledgers[round_ % ENGINES].release(grant.allocation_id, reason="stopped")
            assert ledgers[0].open_allocations() == []
    finally:
        for ledger in ledgers:
            ledger.close()
