"""Fixtures for the quota ledger tests: real databases only, never mocks.

Fixtures
- ``postgres_server`` (session): a real PostgreSQL started by ``initdb`` + ``pg_ctl`` from
  ``/usr/lib/postgresql/*/bin`` on a temporary folder and a free port of 127.0.0.1 (as the
  ``postgres`` OS user when we are root), server time zone Asia/Kolkata so leaked local
  time shows. Stopped at the end of the session, or by its watchdog if pytest dies (see
  ``postgres_server.py``). Skipped, with the reason in the summary, where the binaries
  are absent (``apt-get install postgresql``).
- ``sqlite_url`` / ``postgres_url``: the URL of a fresh, empty ledger database (a file in
  ``tmp_path``; a ``CREATE DATABASE`` per test, dropped after it).
- ``ledger_url``: either of those, parametrised over both backends ("sqlite", "postgresql").
- ``sqlite_ledger`` / ``postgres_ledger`` / ``ledger``: an open :class:`Ledger` on them
  (``ledger`` parametrised over both backends).

Helpers
- ``DEVICES``: the 8 device UUIDs of the static inventory used throughout.
- ``backdate(ledger, allocation_id, seconds)``: THE test hook for time. The ledger only
  believes the database clock, so a test makes time pass for an allocation by moving its
  ``granted_at``, ``last_accrued_at`` (and ``ended_at``) back with an SQL UPDATE.
- ``snapshot(ledger)``: every row of allocations, device leases, audit events and clusters, to
  assert "nothing changed".
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gpulab.quota.ledger import Ledger
from gpulab.quota.models import allocations, audit_events, clusters, device_leases
from tests.quota.postgres_server import PostgresServer, PostgresUnavailable

DEVICES = tuple(f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(8))
BACKENDS = ["sqlite", "postgresql"]


def backdate(ledger: Ledger, allocation_id: int, seconds: float) -> None:
    """Make ``seconds`` pass for one allocation (see the module docstring)."""
    delta = timedelta(seconds=seconds)
    with ledger.engine.begin() as conn:
        row = conn.execute(select(allocations).where(allocations.c.id == allocation_id)).one()
        values = {
            "granted_at": row.granted_at - delta,
            "last_accrued_at": row.last_accrued_at - delta,
        }
        if row.ended_at is not None:
            values["ended_at"] = row.ended_at - delta
        conn.execute(update(allocations).where(allocations.c.id == allocation_id).values(values))


def snapshot(ledger: Ledger) -> dict[str, list[tuple]]:
    with ledger.engine.connect() as conn:
        return {
            table.name: [
                tuple(row)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in (allocations, device_leases, audit_events, clusters)
        }


@pytest.fixture(scope="session")
def postgres_server():
    try:
        server = PostgresServer()
    except PostgresUnavailable as e:
        print(f"\nSKIP PostgreSQL tests: {e}")
        pytest.skip(str(e))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/ledger.sqlite"


@pytest.fixture
def postgres_url(postgres_server):
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def ledger_url(request):
    return request.getfixturevalue(f"{'sqlite' if request.param == 'sqlite' else 'postgres'}_url")


@pytest.fixture
def sqlite_ledger(sqlite_url):
    with Ledger(sqlite_url) as ledger:
        yield ledger


@pytest.fixture
def postgres_ledger(postgres_url):
    with Ledger(postgres_url) as ledger:
        yield ledger


@pytest.fixture
def ledger(ledger_url):
    with Ledger(ledger_url) as ledger:
        yield ledger
