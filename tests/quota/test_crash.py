"""Crash safety: SIGKILL a process that writes the ledger; the ledger stays whole.

After the kill: nothing half-written is visible (an allocation without its leases or its
audit event, or the reverse), the write lock is free again (SQLite file lock, PostgreSQL
advisory lock), SQLite's integrity check passes, and admission goes on.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from gpulab.quota.ledger import Ledger
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES

REPO = Path(__file__).resolve().parents[2]


def start_worker(url: str, mode: str) -> subprocess.Popen:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.quota.crash_worker", url, mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"TZ": "America/Los_Angeles"},  # the worker's local time is not UTC
    )
    line = worker.stdout.readline()
    if line.strip() != "READY":
        worker.kill()
        pytest.fail(f"worker did not start: {line}{worker.communicate()[1]}")
    return worker


def kill(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGKILL)
    assert worker.wait(timeout=30) == -signal.SIGKILL


def assert_whole(ledger: Ledger) -> None:
    assert ledger.verify() == []
    if ledger.backend == "sqlite":
        with ledger.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    events = ledger.audit(limit=100_000)
    granted = Counter(e.allocation_id for e in events if e.action == "granted")
    closed = Counter(e.allocation_id for e in events if e.action in ("released", "culled"))
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, ended_at FROM allocations")).all()
    assert granted == Counter({row.id: 1 for row in rows})  # one grant event per row
    assert closed == Counter({row.id: 1 for row in rows if row.ended_at is not None})


@pytest.mark.timeout(90)
def test_kill_inside_a_write_transaction_loses_only_that_transaction(ledger_url):
    worker = start_worker(ledger_url, "mid_transaction")
    kill(worker)
    with Ledger(ledger_url, busy_timeout=10) as ledger:
        [kept] = ledger.open_allocations()
        assert kept.user == "kept" and kept.device_uuids == DEVICES[:2]
        assert [e.user for e in ledger.audit()] == ["kept"]
        assert_whole(ledger)
        started = time.monotonic()  # the lock the dead process held is free
        grant = ledger.admit(user="next", server="", gpus=3, policy=Policy(), devices=DEVICES)
        assert time.monotonic() - started < 5
        assert grant.device_uuids == DEVICES[2:5]  # the devices "lost" never got
        assert_whole(ledger)


@pytest.mark.timeout(90)
def test_kill_at_a_random_moment_of_busy_writing(ledger_url):
    rng = random.Random(os.environ.get("PYTEST_XDIST_WORKER", "") + ledger_url[:8])
    for _ in range(3):
        worker = start_worker(ledger_url, "churn")
        time.sleep(rng.uniform(0.05, 0.5))
        kill(worker)
        with Ledger(ledger_url, busy_timeout=10) as ledger:
            assert_whole(ledger)
            assert len(ledger.audit(limit=100_000)) >= 9  # it did write before dying
            for allocation in ledger.open_allocations():  # the hub's reconcile, in short
                ledger.release(allocation.id, reason="reconciled")
            grant = ledger.admit(user="after", server="", gpus=8, policy=Policy(), devices=DEVICES)
            ledger.release(grant.allocation_id, reason="stopped")
            assert_whole(ledger)
