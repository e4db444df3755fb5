"""Admission throughput and latency of the quota ledger, on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.admission [--quick]

For each backend, in one run:
- ``floor``: a plain SQLAlchemy INSERT of an allocation row per transaction, no checks, no
  lock: what the database costs at the least.
- ``admit``: ``Ledger.admit`` (1 GPU of 64, so never refused) then ``Ledger.release``, in a
  loop, with 1 and with 4 client threads; latency is that of ``admit`` alone, throughput
  counts admissions per second of wall time (releases included: a GPU is given back
  as often as it is taken).
- ``burst``: 200 simultaneous admissions for 8 GPUs (must grant exactly 8).
Every grant is checked against the devices other live grants hold: ``double_allocations``.

Both databases are durable (SQLite WAL with synchronous=FULL; PostgreSQL with fsync on),
PostgreSQL started like the tests' (``tests/quota/postgres_server.py``) on a temporary folder.
The last line is ``key=value``; ``admissions_per_s`` and ``p99_ms`` are the worse backend's
figures with 4 clients.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, insert

from gpulab.quota.ledger import Grant, Ledger, QuotaDenied
from gpulab.quota.models import allocations
from gpulab.quota.policy import Policy
from tests.quota.postgres_server import PostgresServer, PostgresUnavailable

INVENTORY = tuple(f"GPU-bench-{i:04d}" for i in range(64))
BURST_DEVICES = tuple(f"GPU-burst-{i}" for i in range(8))


class Holders:
    """Who holds each device now, by what the ledger handed out: counts doubles."""

    def __init__(self):
        self.lock = threading.Lock()
        self.held: dict[str, int] = {}
        self.doubles = 0

    def take(self, grant: Grant) -> None:
        with self.lock:
            for uuid in grant.device_uuids:
                if uuid in self.held:
                    self.doubles += 1
                self.held[uuid] = grant.allocation_id

    def give_back(self, grant: Grant) -> None:  # before the release commits: no false alarm
        with self.lock:
            for uuid in grant.device_uuids:
                self.held.pop(uuid, None)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_clients(clients: int, per_client: int, op) -> tuple[float, list[float]]:
    """Run ``op(client, i)`` -> latency seconds; returns (wall seconds, latencies)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        barrier.wait()
        for i in range(per_client):
            latencies[c].append(op(c, i))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return time.perf_counter() - started, [x for lat in latencies for x in lat]


def row(backend, op, clients, wall, latencies) -> dict:
    return {
        "backend": backend,
        "op": op,
        "clients": clients,
        "n": len(latencies),
        "ops_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def bench_backend(backend: str, url: str, per_client: int, holders: Holders) -> list[dict]:
    rows = []
    floor_engine = create_engine(url, pool_size=8)  # plain: no events, no lock
    ledger = Ledger(url, pool_size=8)  # creates the tables (and WAL mode on SQLite)
    policy = Policy(max_gpus=1)
    try:
        for clients in (1, 4):

            def plain_insert(c: int, i: int, clients=clients) -> float:
                started = time.perf_counter()
                with floor_engine.begin() as conn:
                    conn.execute(
                        insert(allocations).values(
                            user=f"floor{clients}-{c}", server=f"s{i}", device_uuids=[], gpus=0
                        )
                    )
                return time.perf_counter() - started

            wall, lat = run_clients(clients, per_client, plain_insert)
            rows.append(row(backend, "floor (plain INSERT)", clients, wall, lat))

            def admit_release(c: int, i: int, clients=clients) -> float:
                started = time.perf_counter()
                grant = ledger.admit(
                    user=f"bench{clients}-{c}",
                    server=f"s{i}",
                    gpus=1,
                    policy=policy,
                    devices=INVENTORY,
                )
                latency = time.perf_counter() - started
                holders.take(grant)
                holders.give_back(grant)
                ledger.release(grant.allocation_id, reason="stopped")
                return latency

            wall, lat = run_clients(clients, per_client, admit_release)
            rows.append(row(backend, "admit (+release)", clients, wall, lat))

        # The burst: 200 at once for 8 GPUs.
        barrier = threading.Barrier(200)
        burst_holders = Holders()

        def one(i: int) -> float:
            barrier.wait()
            started = time.perf_counter()
            with contextlib.suppress(QuotaDenied):
                burst_holders.take(
                    ledger.admit(
                        user=f"burst{i}", server="", gpus=1, policy=policy, devices=BURST_DEVICES
                    )
                )
            return time.perf_counter() - started

        ledgers_before = len(ledger.open_allocations())
        started = time.perf_counter()
        with ThreadPoolExecutor(200) as pool:
            lat = list(pool.map(one, range(200)))
        wall = time.perf_counter() - started
        granted = len(ledger.open_allocations()) - ledgers_before
        holders.doubles += burst_holders.doubles + max(0, granted - len(BURST_DEVICES))
        burst = row(backend, "burst 200 -> 8 GPUs", 200, wall, lat)
        burst["granted"] = granted
        rows.append(burst)
        problems = ledger.verify()
        if problems:
            raise SystemExit(f"{backend}: ledger inconsistent: {problems[:3]}")
    finally:
        ledger.close()
        floor_engine.dispose()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    args = parser.parse_args(argv)
    per_client = 250 if args.quick else 1000
    holders = Holders()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpulab-bench-") as folder:
        rows += bench_backend(
            "sqlite", f"sqlite:///{Path(folder) / 'ledger.sqlite'}", per_client, holders
        )
    try:
        with PostgresServer(fsync=True) as pg:
            rows += bench_backend("postgresql", pg.create_database("bench"), per_client, holders)
    except PostgresUnavailable as e:
        print(f"PostgreSQL skipped: {e}")

    header = f"{'backend':<11} {'operation':<22} {'clients':>7} {'n':>6} {'ops/s':>8} "
    header += f"{'p50 ms':>8} {'p99 ms':>8}  granted"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:<11} {r['op']:<22} {r['clients']:>7} {r['n']:>6} "
            f"{r['ops_per_s']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  "
            f"{r.get('granted', '')}"
        )

    figures: dict[str, object] = {}
    for backend in ("sqlite", "postgresql"):
        mine = {(r["op"], r["clients"]): r for r in rows if r["backend"] == backend}
        if not mine:
            continue
        admit4, floor4 = mine[("admit (+release)", 4)], mine[("floor (plain INSERT)", 4)]
        figures[f"{backend}_admissions_per_s"] = round(admit4["ops_per_s"], 1)
        figures[f"{backend}_p50_ms"] = round(admit4["p50_ms"], 2)
        figures[f"{backend}_p99_ms"] = round(admit4["p99_ms"], 2)
        figures[f"{backend}_floor_inserts_per_s"] = round(floor4["ops_per_s"], 1)
        figures[f"{backend}_p50_vs_floor"] = round(admit4["p50_ms"] / floor4["p50_ms"], 2)
        figures[f"{backend}_burst_granted"] = mine[("burst 200 -> 8 GPUs", 200)]["granted"]
    backends = [b for b in ("sqlite", "postgresql") if f"{b}_p99_ms" in figures]
    summary = {
        "admissions_per_s": min(figures[f"{b}_admissions_per_s"] for b in backends),
        "p99_ms": max(figures[f"{b}_p99_ms"] for b in backends),
        "double_allocations": holders.doubles,
        **figures,
    }
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
