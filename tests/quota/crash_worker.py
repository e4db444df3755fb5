"""A process for test_crash.py to SIGKILL: ``python -m tests.quota.crash_worker URL MODE``.

- ``mid_transaction``: commits one grant (user "kept"), then makes a second grant (user
  "lost") inside a write transaction that it never commits, prints READY and waits to die.
- ``churn``: admits and releases as fast as it can, printing READY after the first cycles,
  until it is killed at some random moment (possibly inside a commit).
"""

from __future__ import annotations

import contextlib
import sys
import time

from gpulab.quota.ledger import Ledger, QuotaDenied
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES


def main(url: str, mode: str) -> None:
    ledger = Ledger(url, busy_timeout=10)
    policy = Policy()
    if mode == "mid_transaction":
        ledger.admit(user="kept", server="", gpus=2, policy=policy, devices=DEVICES)
        with ledger._transaction(write=True) as (conn, now):  # the ledger's own write path
            grant = ledger._decide(conn, now, "lost", "", 3, policy, list(DEVICES), "worker")
            assert grant.device_uuids == DEVICES[2:5]
            print("READY", flush=True)
            time.sleep(600)
    elif mode == "churn":
        cycle = 0
        while True:
            grants = []
            for i in range(3):
                with contextlib.suppress(QuotaDenied):
                    grants.append(
                        ledger.admit(
                            user=f"u{i}", server=f"s{cycle}", gpus=2, policy=policy, devices=DEVICES
                        )
                    )
            ledger.accrue({g.allocation_id: 1.0 for g in grants})
            for grant in grants[:2]:  # leave some open
                ledger.release(grant.allocation_id, reason="stopped")
            for allocation in ledger.open_allocations():
                if allocation.id not in {g.allocation_id for g in grants}:
                    ledger.release(allocation.id, reason="idle")
            cycle += 1
            if cycle == 3:
                print("READY", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
