"""The quota ledger: who was granted which GPUs, for how long, and every decision taken.

One :class:`Ledger` per process (it owns a connection pool); any number of processes may
share one database. The tables are in :mod:`gpulab.quota.models`.

Atomicity. Every write (``admit``, ``release``, ``accrue``, ``record_event``,
``set_policy``, ``restore``) runs as one transaction that first takes the ledger's write
lock, so the checks and the writes of one admission can't interleave with another's:

- SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock before the first read; other
  writers wait on the busy timeout; readers keep reading the last commit (WAL mode).
- PostgreSQL: ``pg_advisory_xact_lock`` on one fixed key, released at commit or rollback
  (also when the client dies). We chose it over SERIALIZABLE + retry: every admission
  reads the same lease rows, so under a burst (200 requests for 8 GPUs) nearly every
  SERIALIZABLE transaction would fail and retry, and bounded retries would turn a burst into
  errors instead of clean "capacity" denials. A ledger write takes about a millisecond and
  spawns are rare, so one writer at a time costs nothing that matters. Serialisation
  failures, deadlocks and unique violations (someone writing without the lock) are still
  retried, a bounded number of times with jitter.

Either way the primary key of ``device_leases`` makes "one device twice" impossible in the
database itself, and a partial unique index allows one open allocation per (user, server).

Dask clusters. A user's server may run Dask clusters; each is a ``clusters`` row tied to
the server's open allocation (``admit_cluster``, ``scale_cluster``, ``release_cluster``). Their
workers count against ``Policy.max_dask_workers`` over all the user's servers, under the same
write lock as ``admit``, so racing admissions never exceed it. Closing an allocation
(``release``, hence reconciliation and culling too) closes its clusters in the same
transaction, with the reason "server stopped".

Clock. Every timestamp and every duration comes from the database's clock, read once per
transaction after the write lock is held (so they are ordered like the commits), never
from the caller's. Test hook: to make time pass, move ``granted_at`` and
``last_accrued_at`` of an allocation back with an SQL UPDATE (``tests/quota/conftest.py``'s
``backdate``).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gpulab.quota.models import (
    ACTIONS,
    CULL_REASONS,
    UTCDateTime,
    allocations,
    audit_events,
    clusters,
    device_leases,
    metadata,
)
from gpulab.quota.models import policy_overrides as overrides_table
from gpulab.quota.policy import OVERRIDE_LEVELS, Policy, PolicyError, PolicyLevel, override_setting
from gpulab.quota.reservations import Refusal as _Refusal
from gpulab.quota.reservations import admission as reservation_admission
from gpulab.quota.reservations import record_draw as record_reservation_draw
from gpulab.quota.reservations import reservation_draws, reservations_table

T = TypeVar("T")

# pg_advisory_xact_lock key of the ledger's write lock (ASCII "gpulabLD").
_PG_LOCK_KEY = 0x6770756C61624C44
_PG_RETRY_SQLSTATES = {"40001", "40P01", "23505"}  # serialization, deadlock, unique
_MAX_ATTEMPTS = 8
# The stop reason of the clusters of an allocation that closes.
SERVER_STOPPED = "server stopped"
BACKUP_FORMAT = "gpulab-ledger"
BACKUP_VERSION = 1


class QuotaDenied(Exception):
    """An admission the quota refuses: an expected, user-facing outcome, not a fault.

    ``str(e)`` is the message for the user. ``reason`` is a short code for programs and
    metrics ("max_gpus", "budget", "capacity", "open_allocation"); ``status_code`` the HTTP
    status to answer with (403 for a limit, 409 for capacity or a conflict); ``detail`` the
    figures behind the decision, and ``log_message`` what to log.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status_code: int = 403,
        detail: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status_code = status_code
        self.detail = dict(detail or {})

    @property
    def log_message(self) -> str:
        return f"quota denied ({self.reason}): {self.message} {json.dumps(self.detail)}"


class ClusterDenied(QuotaDenied):
    """A Dask cluster the quota refuses (to start or to grow).

    Reasons: "max_dask_workers" (403: the user's open clusters' workers plus this request
    exceed ``Policy.max_dask_workers``), "devices" (403: devices the server's allocation does
    not hold, or that another open cluster of that server uses), "no_server" (409: the user
    has no open allocation for that server), "cluster_exists" (409: an open cluster has that
    key with other numbers). ``limit`` is the user's ``max_dask_workers`` (None: no limit) and
    ``in_use`` the workers of the user's open clusters, at the time of the decision.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status_code: int = 403,
        detail: Mapping[str, Any] | None = None,
        limit: int | None,
        in_use: int,
    ):
        super().__init__(message, reason=reason, status_code=status_code, detail=detail)
        self.limit = limit
        self.in_use = in_use


class ClusterRequestError(ValueError):
    """A cluster argument is invalid (a caller's mistake, nothing recorded); ``field`` names
    it ("key", "workers", "gpus", "devices", ...), as does the message."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


class UnknownCluster(KeyError):
    """The user has no open cluster with that key."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Grant:
    allocation_id: int
    user: str
    server: str
    device_uuids: tuple[str, ...]
    granted_at: datetime


@dataclass(frozen=True)
class Allocation:
    id: int
    user: str
    server: str
    device_uuids: tuple[str, ...]
    gpus: int
    granted_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    gpu_seconds: float  # accrued up to last_accrued_at (to ended_at once closed)
    energy_joules: float
    last_accrued_at: datetime

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True)
class Usage:
    gpu_seconds: float  # in the window, running allocations counted up to now
    energy_joules: float  # in the window, as accrued (not extrapolated)
    open_gpus: int  # held now


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str | None
    action: str
    user: str | None
    allocation_id: int | None
    reason: str | None
    detail: dict | None


@dataclass(frozen=True)
class Cluster:
    id: int
    user: str
    server: str
    key: str  # the client's id of the cluster
    name: str
    workers: int
    gpus: int
    devices: tuple[str, ...]
    allocation_id: int  # the allocation of the server it runs in
    started_at: datetime
    stopped_at: datetime | None
    stop_reason: str | None

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "user": self.user,
            "server": self.server,
            "name": self.name,
            "workers": self.workers,
            "gpus": self.gpus,
            "devices": list(self.devices),
            "allocation_id": self.allocation_id,
            "started_at": self.started_at.isoformat(),
            "stopped_at": None if self.stopped_at is None else self.stopped_at.isoformat(),
            "stop_reason": self.stop_reason,
        }


def _cluster(row) -> Cluster:
    return Cluster(
        id=row.id,
        user=row.user,
        server=row.server,
        key=row.key,
        name=row.name,
        workers=row.workers,
        gpus=row.gpus,
        devices=tuple(row.devices or ()),
        allocation_id=row.allocation_id,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        stop_reason=row.stop_reason,
    )


def _allocation(row) -> Allocation:
    return Allocation(
        id=row.id,
        user=row.user,
        server=row.server,
        device_uuids=tuple(row.device_uuids or ()),
        gpus=row.gpus,
        granted_at=row.granted_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        gpu_seconds=row.gpu_seconds,
        energy_joules=row.energy_joules,
        last_accrued_at=row.last_accrued_at,
    )


def _audit_event(row) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        user=row.user,
        allocation_id=row.allocation_id,
        reason=row.reason,
        detail=row.detail,
    )


def _check_gpus(gpus: object) -> int:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"gpus must be a whole number of GPUs, 0 or more, not {gpus!r}")
    return gpus


def _check_name(field: str, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok) or len(value) > 255:
        raise ValueError(f"{field} must be a string of at most 255 characters, not {value!r}")
    return value


def _check_devices(devices: Sequence[str]) -> list[str]:
    if isinstance(devices, str | bytes) or not isinstance(devices, Sequence):
        raise ValueError(f"devices must be a sequence of device UUIDs, not {devices!r}")
    unique = list(dict.fromkeys(devices))
    for uuid in unique:
        _check_name("each of devices", uuid)
    return unique


_CLUSTER_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


# A sanity bound on a cluster's workers and GPUs (the policy is the real limit): keeps
# numbers inside the database's INTEGER.
MAX_CLUSTER_WORKERS = 100_000


def _check_whole(field: str, value: object, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not minimum <= value <= MAX_CLUSTER_WORKERS
    ):
        raise ClusterRequestError(
            f"{field} must be a whole number from {minimum} to {MAX_CLUSTER_WORKERS}, "
            f"not {value!r:.40}",
            field=field,
        )
    return value


def _check_cluster_text(field: str, value: object, *, empty_ok: bool = False) -> str:
    try:
        return _check_name(field, value, empty_ok=empty_ok)
    except ValueError as e:
        raise ClusterRequestError(str(e), field=field) from None


def check_cluster_key(key: object) -> str:
    """``key`` if it is a valid cluster key (1 to 64 of ``A-Z a-z 0-9 _ -``), else
    ``ClusterRequestError`` naming "key"."""
    if not isinstance(key, str) or not _CLUSTER_KEY.fullmatch(key):
        raise ClusterRequestError(
            f"key must be 1 to 64 letters, digits, '_' or '-', not {key!r:.80}", field="key"
        )
    return key


def _check_cluster_devices(devices: object, gpus: int) -> list[str]:
    must = "devices must be a list of the device UUIDs the cluster's workers use"
    if isinstance(devices, str | bytes) or not isinstance(devices, Sequence):
        raise ClusterRequestError(f"{must}, not {devices!r:.80}", field="devices")
    for uuid in devices:
        if not isinstance(uuid, str) or not uuid or len(uuid) > 255:
            raise ClusterRequestError(
                f"{must}: each a string of at most 255 characters, not {uuid!r:.80}",
                field="devices",
            )
    if len(set(devices)) != len(devices):
        raise ClusterRequestError(f"{must}, each once: {list(devices)!r:.200}", field="devices")
    if len(devices) != gpus:
        raise ClusterRequestError(
            f"gpus must be the number of devices ({len(devices)}), not {gpus!r}", field="gpus"
        )
    return list(devices)


def _check_max_workers(max_workers: object) -> int | None:
    if max_workers is None:
        return None
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 0:
        raise ClusterRequestError(
            f"max_workers must be a whole number >= 0 or None, not {max_workers!r}",
            field="max_workers",
        )
    return max_workers


def _server_name(server: str) -> str:
    return f"server {server!r}" if server else "your default server"


def _clusters_in_use(rows) -> str:
    """The clusters holding workers, as " (cluster 'prep': 4)", " (clusters 'prep': 4,
    'x': 2)", or "" when there are none."""
    rows = [row for row in rows if row.workers]
    if not rows:
        return ""
    listed = ", ".join(f"{row.name!r}: {row.workers}" for row in rows)
    return f" (cluster{'s' if len(rows) > 1 else ''} {listed})"


def _workers_denial(asks: str, limit: int, others: list, other_use: str = "") -> str:
    """The message of a "max_dask_workers" denial: the limit and what holds it now."""
    if limit == 0:
        return (
            "Dask workers: your limit is 0, so you may not run Dask clusters; "
            "ask an operator for a Dask worker quota."
        )
    in_use = sum(row.workers for row in others)
    advice = (
        "Stop or scale down a cluster, or ask for fewer workers."
        if in_use
        else "Ask for fewer workers."
    )
    return (
        f"Dask workers: {asks} but your limit is {limit} at once and {in_use} "
        f"{'is' if in_use == 1 else 'are'} in use{other_use}{_clusters_in_use(others)}. {advice}"
    )


def _human_duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    return max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds())


class Ledger:
    """The allocations, device leases and audit log in one SQLAlchemy database.

    ``url``: ``sqlite:////abs/path/ledger.sqlite`` or ``postgresql+psycopg://...``.
    ``busy_timeout``: seconds a write waits for the write lock before failing.
    ``pool_size``: connections kept per process (concurrent callers beyond it wait).
    Tables are created if missing.
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0, pool_size: int = 5):
        self.url = make_url(url)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"ledger url must be sqlite or postgresql, not {self.backend!r}")
        self.busy_timeout = busy_timeout
        kwargs: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_timeout": busy_timeout,
        }
        if self.backend == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                raise ValueError("the ledger needs a SQLite file, not an in-memory database")
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        else:
            # Waiting for the write lock is bounded like SQLite's busy timeout.
            ms = int(busy_timeout * 1000)
            kwargs["connect_args"] = {"options": f"-c lock_timeout={ms}"}
            # Checked at checkout, before any transaction: a write whose COMMIT was lost
            # with its connection is never retried blindly (its outcome is unknown).
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(self.url, **kwargs)
        if self.backend == "sqlite":
            _configure_sqlite(self.engine, busy_timeout)
        # One writer at a time inside this process: waiters queue here, fairly and without
        # polling, instead of in SQLite's busy handler. Other processes are serialised by
        # the database lock.
        self._write_mutex = threading.Lock()
        with self._transaction(write=True) as (conn, _):
            metadata.create_all(conn)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.url.render_as_string(hide_password=True)}>"

    # transactions ---------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[tuple[Connection, datetime]]:
        """A transaction and the database's 'now'; with the write lock when ``write``."""
        with self._write_mutex if write else nullcontext(), self.engine.connect() as conn:
            if self.backend == "sqlite":
                conn.execution_options(gpulab_sqlite_begin="IMMEDIATE" if write else "DEFERRED")
            elif not write:
                conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot
            with conn.begin():
                yield conn, self._db_now(conn, lock=write)

    def _db_now(self, conn: Connection, *, lock: bool = False) -> datetime:
        """The database's clock; first takes the write lock on PostgreSQL when ``lock``
        (SQLite's BEGIN IMMEDIATE took it already)."""
        if self.backend == "sqlite":
            value = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar()
            return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        if lock:
            # One round trip: the subquery (volatile, so never flattened) takes the lock
            # before the outer clock_timestamp() is read, so "now" is after the wait, and
            # timestamps are ordered like the commits (now() would be the wait's start).
            value = conn.execute(
                text(
                    "SELECT clock_timestamp() FROM "
                    "(SELECT pg_advisory_xact_lock(:key) AS locked) AS write_lock"
                ),
                {"key": _PG_LOCK_KEY},
            ).scalar()
        else:
            value = conn.exec_driver_sql("SELECT clock_timestamp()").scalar()
        return value.astimezone(UTC)

    def _write(self, fn: Callable[[Connection, datetime], T]) -> T:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                with self._transaction(write=True) as (conn, now):
                    return fn(conn, now)
            except DBAPIError as e:
                if attempt == _MAX_ATTEMPTS or not self._retryable(e):
                    raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    def _retryable(self, error: DBAPIError) -> bool:
        if self.backend == "postgresql":
            return getattr(error.orig, "sqlstate", None) in _PG_RETRY_SQLSTATES
        return "database is locked" in str(error.orig)

    def db_now(self) -> datetime:
        """The database's clock, as an aware UTC datetime."""
        with self._transaction(write=False) as (_, now):
            return now

    # admission ------------------------------------------------------------------------

    def admit(
        self,
        *,
        user: str,
        server: str,
        gpus: int,
        policy: Policy,
        devices: Sequence[str],
        actor: str | None = None,
        groups: Iterable[str] = (),
        mig: str | None = None,
    ) -> Grant:
        """Grant ``gpus`` of ``devices`` (the node's inventory) to ``user``'s ``server``.

        Checks, in order: the request (ValueError, nothing recorded), one open allocation
        per server, ``policy.max_gpus``, the GPU-hour budget in the rolling window, free
        devices. A refusal raises :class:`QuotaDenied` after committing a ``denied`` audit
        event; a grant commits the allocation, its leases and a ``granted`` event together.
        ``gpus=0`` (a CPU server) is granted and recorded with no devices.

        Reservations (``gpulab.quota.reservations``): after the free-device check, a GPU
        request is checked against the reservations of its pool (``mig``: the MIG slice
        profile of ``devices``, None for whole GPUs); ``groups`` (the user's groups) says
        which reservations the user may draw on. Refusals: "reserved" and
        "reservation_full" (409).
        """
        gpus = _check_gpus(gpus)
        if isinstance(groups, str):
            raise ValueError(f"groups must be a collection of group names, not {groups!r}")
        groups = frozenset(groups)
        user = _check_name("user", user)
        server = _check_name("server", server, empty_ok=True)
        inventory = _check_devices(devices)
        decision = self._write(
            lambda conn, now: self._decide(
                conn, now, user, server, gpus, policy, inventory, actor, groups, mig
            )
        )
        if isinstance(decision, QuotaDenied):
            raise decision
        return decision

    def _decide(
        self,
        conn: Connection,
        now: datetime,
        user: str,
        server: str,
        gpus: int,
        policy: Policy,
        inventory: list[str],
        actor: str | None,
        groups: frozenset[str] = frozenset(),
        mig: str | None = None,
    ) -> Grant | QuotaDenied:
        request = {"gpus": gpus, "server": server}

        def deny(reason: str, message: str, status_code: int = 403, **figures) -> QuotaDenied:
            denial = QuotaDenied(
                message, reason=reason, status_code=status_code, detail=request | figures
            )
            # reason: the short code (for queries and metrics); the message goes in detail.
            self._audit(
                conn, now, "denied", user, None, actor, reason, denial.detail | {"message": message}
            )
            return denial

        mine = conn.execute(
            select(allocations).where(allocations.c.user == user, allocations.c.ended_at.is_(None))
        ).all()
        for row in mine:
            if row.server == server:
                name = f"server {server!r}" if server else "your default server"
                return deny(
                    "open_allocation",
                    f"{name} already holds allocation {row.id} "
                    f"({_plural(row.gpus, 'GPU')}); stop it before starting it again",
                    409,
                    allocation_id=row.id,
                )
        held = sum(row.gpus for row in mine)
        if gpus and policy.max_gpus is not None and held + gpus > policy.max_gpus:
            return deny(
                "max_gpus",
                f"you hold {held} of your {_plural(policy.max_gpus, 'GPU')}; "
                f"this request for {gpus} would exceed it",
                held=held,
                max_gpus=policy.max_gpus,
            )
        if gpus and policy.gpu_hours is not None:
            used = self._usage(conn, now, user, policy.window_seconds).gpu_seconds
            if used >= policy.gpu_hours * 3600:
                return deny(
                    "budget",
                    f"your GPU-hour budget is used up: {used / 3600:.2f} of "
                    f"{policy.gpu_hours:g} GPU-hours in the last "
                    f"{_human_duration(policy.window_seconds)}",
                    used_gpu_seconds=round(used, 3),
                    gpu_hours=policy.gpu_hours,
                    window_seconds=policy.window_seconds,
                )
        chosen: list[str] = []
        drawing = None  # the reservation this grant draws on
        if gpus:
            total = len(inventory)
            leased = set(conn.scalars(select(device_leases.c.device_uuid)))
            free = [uuid for uuid in inventory if uuid not in leased]
            if gpus > total:
                message = (
                    f"this node has {_plural(total, 'GPU')}; "
                    f"a request for {gpus} can never be granted here"
                    if total
                    else "this node has no GPUs"
                )
                return deny("capacity", message, 409, free=len(free), total=total)
            if len(free) < gpus:
                message = (
                    f"all {_plural(total, 'GPU')} are in use"
                    if not free
                    else f"only {len(free)} of {total} GPUs "
                    f"{'is' if len(free) == 1 else 'are'} free; this request needs {gpus}"
                )
                if total == 1 and not free:
                    message = "the node's only GPU is in use"
                return deny("capacity", message, 409, free=len(free), total=total)
            drawing = reservation_admission(
                conn,
                now,
                groups=groups,
                gpus=gpus,
                mig=mig,
                free=len(free),
                horizon_seconds=policy.max_session_seconds,
            )
            if isinstance(drawing, _Refusal):
                return deny(drawing.reason, drawing.message, 409, **drawing.figures)
            chosen = free[:gpus]

        allocation_id = conn.execute(
            insert(allocations).values(
                user=user,
                server=server,
                device_uuids=chosen,
                gpus=gpus,
                granted_at=now,
                last_accrued_at=now,
                gpu_seconds=0.0,
                energy_joules=0.0,
            )
        ).inserted_primary_key[0]
        if chosen:
            conn.execute(
                insert(device_leases),
                [{"device_uuid": uuid, "allocation_id": allocation_id} for uuid in chosen],
            )
        granted = request | {"devices": chosen}
        if drawing is not None:
            record_reservation_draw(conn, allocation_id, drawing)
            granted["reservation_id"] = drawing
        self._audit(conn, now, "granted", user, allocation_id, actor, None, granted)
        return Grant(allocation_id, user, server, tuple(chosen), now)

    # closing and accounting -----------------------------------------------------------

    def release(
        self,
        allocation_id: int,
        *,
        reason: str,
        actor: str | None = None,
        energy_joules: float | None = None,
    ) -> Allocation:
        """Close an allocation: accrue to now, free its devices, audit why.

        The audit action is ``culled`` for enforcement reasons (``CULL_REASONS``), else
        ``released``. Releasing a closed allocation changes nothing and returns it (the hub
        may release from several paths). ``energy_joules``: a last energy delta to add.
        Unknown ids raise KeyError. The allocation's open Dask clusters close with it, in
        the same transaction (reason "server stopped", each audited ``cluster_released``).
        """
        reason = _check_name("reason", reason)
        extra = _check_energy(energy_joules) if energy_joules is not None else 0.0

        def close(conn: Connection, now: datetime) -> Allocation:
            row = conn.execute(select(allocations).where(allocations.c.id == allocation_id)).first()
            if row is None:
                raise KeyError(f"no allocation {allocation_id!r} in the ledger")
            if row.ended_at is not None:
                return _allocation(row)
            elapsed = max(0.0, (now - row.last_accrued_at).total_seconds())
            end = max(now, row.last_accrued_at)
            conn.execute(
                update(allocations)
                .where(allocations.c.id == allocation_id)
                .values(
                    ended_at=end,
                    end_reason=reason,
                    last_accrued_at=end,
                    gpu_seconds=row.gpu_seconds + row.gpus * elapsed,
                    energy_joules=row.energy_joules + extra,
                )
            )
            conn.execute(delete(device_leases).where(device_leases.c.allocation_id == row.id))
            action = "culled" if reason in CULL_REASONS else "released"
            self._audit(conn, now, action, row.user, row.id, actor, reason, None)
            self._close_clusters(conn, now, row.id, actor)
            return self._get(conn, allocation_id)

        return self._write(close)

    def accrue(self, energy_by_allocation: Mapping[int, float] | None = None) -> list[Allocation]:
        """Add the GPU-seconds since each open allocation's last accrual (database clock),
        and the energy deltas given (joules since the last call, by allocation id; closed
        allocations take them too, unknown ids are ignored). Returns the open allocations.
        """
        energy = {int(k): _check_energy(v) for k, v in (energy_by_allocation or {}).items()}

        def run(conn: Connection, now: datetime) -> list[Allocation]:
            for row in conn.execute(select(allocations).where(allocations.c.ended_at.is_(None))):
                elapsed = max(0.0, (now - row.last_accrued_at).total_seconds())
                conn.execute(
                    update(allocations)
                    .where(allocations.c.id == row.id)
                    .values(
                        gpu_seconds=row.gpu_seconds + row.gpus * elapsed,
                        last_accrued_at=max(now, row.last_accrued_at),
                        energy_joules=row.energy_joules + energy.pop(row.id, 0.0),
                    )
                )
            for allocation_id, joules in energy.items():  # closed ones
                conn.execute(
                    update(allocations)
                    .where(allocations.c.id == allocation_id)
                    .values(energy_joules=allocations.c.energy_joules + joules)
                )
            return self._open(conn, None)

        return self._write(run)

    def record_event(
        self,
        action: str,
        *,
        user: str | None = None,
        actor: str | None = None,
        allocation_id: int | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an audit event (``limit_changed``, ``warned``, ``reconciled`` ...)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}, not {action!r}")

        def run(conn: Connection, now: datetime) -> AuditEvent:
            event_id = self._audit(
                conn, now, action, user, allocation_id, actor, reason, dict(detail or {})
            )
            row = conn.execute(select(audit_events).where(audit_events.c.id == event_id)).one()
            return _audit_event(row)

        return self._write(run)

    def _audit(self, conn, now, action, user, allocation_id, actor, reason, detail) -> int:
        return conn.execute(
            insert(audit_events).values(
                at=now,
                action=action,
                user=user,
                allocation_id=allocation_id,
                actor=actor,
                reason=reason,
                detail=detail,
            )
        ).inserted_primary_key[0]

    # Dask clusters --------------------------------------------------------------------

    def admit_cluster(
        self,
        *,
        user: str,
        server: str,
        key: str,
        name: str,
        workers: int,
        gpus: int,
        devices: Sequence[str],
        max_workers: int | None,
        actor: str | None = None,
    ) -> Cluster:
        """Record a Dask cluster of ``workers`` workers that ``user`` starts in ``server``
        (its workers using ``devices``, ``gpus`` of them, from that server's allocation).

        ``key``: the client's id of the cluster (1 to 64 of ``A-Z a-z 0-9 _ -``); ``name``:
        what to call it in messages ("" means the key); ``max_workers``: the user's
        ``Policy.max_dask_workers`` (None: no limit).

        Checks, in order: the arguments (``ClusterRequestError`` naming the field, nothing
        recorded); an open cluster with that key (the same server and numbers: that cluster
        is returned, nothing recorded; other numbers: 409 "cluster_exists"); the server's
        open allocation (409 "no_server"); the user's open clusters' workers plus
        ``workers`` within ``max_workers`` (403 "max_dask_workers"); ``devices`` held by
        the allocation (403 "devices") and not used by another open cluster of the server
        (403 "devices"). A refusal raises :class:`ClusterDenied` after committing a
        ``cluster_denied`` audit event; a grant commits the row and a ``cluster_granted``
        event together.
        """
        user = _check_cluster_text("user", user)
        server = _check_cluster_text("server", server, empty_ok=True)
        key = check_cluster_key(key)
        name = _check_cluster_text("name", name, empty_ok=True) or key
        workers = _check_whole("workers", workers, 1)
        gpus = _check_whole("gpus", gpus, 0)
        devices = _check_cluster_devices(devices, gpus)
        max_workers = _check_max_workers(max_workers)
        request = {
            "key": key,
            "name": name,
            "server": server,
            "workers": workers,
            "gpus": gpus,
            "devices": devices,
        }

        def decide(conn: Connection, now: datetime) -> Cluster | ClusterDenied:
            mine = self._open_cluster_rows(conn, user)
            in_use = sum(row.workers for row in mine)

            def deny(reason, message, status_code=403, allocation_id=None) -> ClusterDenied:
                detail = request | {"op": "start", "limit": max_workers, "in_use": in_use}
                self._audit(
                    conn,
                    now,
                    "cluster_denied",
                    user,
                    allocation_id,
                    actor,
                    reason,
                    detail | {"message": message},
                )
                return ClusterDenied(
                    message,
                    reason=reason,
                    status_code=status_code,
                    detail=detail,
                    limit=max_workers,
                    in_use=in_use,
                )

            same_key = next((row for row in mine if row.key == key), None)
            if same_key is not None:
                numbers = (same_key.server, same_key.workers, sorted(same_key.devices or ()))
                if numbers == (server, workers, sorted(devices)):
                    return _cluster(same_key)  # a retry of the same request
                return deny(
                    "cluster_exists",
                    f"cluster {key!r} is already running in "
                    f"{_server_name(same_key.server)} with "
                    f"{_plural(same_key.workers, 'worker')}; scale it or stop it first",
                    409,
                    same_key.allocation_id,
                )
            allocation = conn.execute(
                select(allocations).where(
                    allocations.c.user == user,
                    allocations.c.server == server,
                    allocations.c.ended_at.is_(None),
                )
            ).first()
            if allocation is None:
                return deny(
                    "no_server",
                    f"{_server_name(server)} is not running; start it before starting a "
                    "Dask cluster in it",
                    409,
                )
            if max_workers is not None and in_use + workers > max_workers:
                return deny(
                    "max_dask_workers",
                    _workers_denial(f"this cluster asks for {workers}", max_workers, mine),
                    allocation_id=allocation.id,
                )
            held = list(allocation.device_uuids or ())
            outside = [uuid for uuid in devices if uuid not in held]
            if outside:
                holds = f"it holds {', '.join(held)}" if held else "it holds no GPUs"
                return deny(
                    "devices",
                    f"{_server_name(server)} was not allocated {', '.join(outside)} ({holds}); "
                    "a cluster may use only its server's devices",
                    allocation_id=allocation.id,
                )
            for row in mine:
                shared = [uuid for uuid in devices if uuid in (row.devices or ())]
                if row.allocation_id == allocation.id and shared:
                    return deny(
                        "devices",
                        f"{', '.join(shared)} {'is' if len(shared) == 1 else 'are'} already "
                        f"used by cluster {row.name!r} of {_server_name(server)}; stop it or "
                        "use other devices",
                        allocation_id=allocation.id,
                    )
            cluster_id = conn.execute(
                insert(clusters).values(
                    user=user,
                    server=server,
                    key=key,
                    name=name,
                    workers=workers,
                    gpus=gpus,
                    devices=devices,
                    allocation_id=allocation.id,
                    started_at=now,
                )
            ).inserted_primary_key[0]
            self._audit(
                conn,
                now,
                "cluster_granted",
                user,
                allocation.id,
                actor,
                None,
                request | {"cluster_id": cluster_id},
            )
            return self._get_cluster(conn, cluster_id)

        decision = self._write(decide)
        if isinstance(decision, ClusterDenied):
            raise decision
        return decision

    def scale_cluster(
        self,
        user: str,
        key: str,
        workers: int,
        *,
        max_workers: int | None,
        actor: str | None = None,
    ) -> Cluster:
        """Set the workers of ``user``'s open cluster ``key`` (0 or more) and return it.

        Growing is checked like ``admit_cluster``: the user's other open clusters' workers
        plus ``workers`` within ``max_workers`` (else :class:`ClusterDenied`
        "max_dask_workers", audited ``cluster_denied``). Shrinking is always allowed (also
        above a limit an operator lowered). A change is audited ``cluster_scaled``; the same
        number changes nothing. No such open cluster: :class:`UnknownCluster`. Bad
        arguments: ``ClusterRequestError``, nothing recorded.
        """
        user = _check_cluster_text("user", user)
        key = check_cluster_key(key)
        workers = _check_whole("workers", workers, 0)
        max_workers = _check_max_workers(max_workers)

        def run(conn: Connection, now: datetime) -> Cluster | ClusterDenied:
            mine = self._open_cluster_rows(conn, user)
            row = next((r for r in mine if r.key == key), None)
            if row is None:
                raise UnknownCluster(f"you have no running cluster {key!r}")
            others = [r for r in mine if r.id != row.id]
            in_use = sum(r.workers for r in mine)
            detail = {"key": key, "name": row.name, "cluster_id": row.id, "server": row.server}
            detail |= {"from": row.workers, "workers": workers}
            if (
                workers > row.workers
                and max_workers is not None
                and sum(r.workers for r in others) + workers > max_workers
            ):
                message = _workers_denial(
                    f"cluster {row.name!r} asks to scale to {workers}",
                    max_workers,
                    others,
                    " by your other clusters",
                )
                detail |= {"op": "scale", "limit": max_workers, "in_use": in_use}
                self._audit(
                    conn,
                    now,
                    "cluster_denied",
                    user,
                    row.allocation_id,
                    actor,
                    "max_dask_workers",
                    detail | {"message": message},
                )
                return ClusterDenied(
                    message,
                    reason="max_dask_workers",
                    detail=detail,
                    limit=max_workers,
                    in_use=in_use,
                )
            if workers != row.workers:
                conn.execute(
                    update(clusters).where(clusters.c.id == row.id).values(workers=workers)
                )
                self._audit(
                    conn, now, "cluster_scaled", user, row.allocation_id, actor, None, detail
                )
            return self._get_cluster(conn, row.id)

        decision = self._write(run)
        if isinstance(decision, ClusterDenied):
            raise decision
        return decision

    def release_cluster(
        self, user: str, key: str, *, reason: str, actor: str | None = None
    ) -> Cluster | None:
        """Close ``user``'s open cluster ``key``, audited ``cluster_released`` with ``reason``;
        returns it closed. Idempotent: with no such open cluster (never started, or closed
        already) nothing changes and it returns None."""
        user = _check_cluster_text("user", user)
        key = check_cluster_key(key)
        reason = _check_cluster_text("reason", reason)

        def run(conn: Connection, now: datetime) -> Cluster | None:
            row = conn.execute(
                select(clusters).where(
                    clusters.c.user == user, clusters.c.key == key, clusters.c.stopped_at.is_(None)
                )
            ).first()
            if row is None:
                return None
            self._stop_cluster(conn, now, row, reason, actor)
            return self._get_cluster(conn, row.id)

        return self._write(run)

    def open_clusters(self, user: str | None = None, server: str | None = None) -> list[Cluster]:
        """Open clusters, oldest first: everyone's, ``user``'s, or those of one server."""
        query = select(clusters).where(clusters.c.stopped_at.is_(None))
        if user is not None:
            query = query.where(clusters.c.user == user)
        if server is not None:
            query = query.where(clusters.c.server == server)
        with self._transaction(write=False) as (conn, _):
            return [_cluster(row) for row in conn.execute(query.order_by(clusters.c.id))]

    def _open_cluster_rows(self, conn: Connection, user: str) -> list:
        query = select(clusters).where(clusters.c.user == user, clusters.c.stopped_at.is_(None))
        return list(conn.execute(query.order_by(clusters.c.id)))

    def _get_cluster(self, conn: Connection, cluster_id: int) -> Cluster:
        return _cluster(conn.execute(select(clusters).where(clusters.c.id == cluster_id)).one())

    def _stop_cluster(self, conn, now, row, reason: str, actor: str | None) -> None:
        conn.execute(
            update(clusters)
            .where(clusters.c.id == row.id)
            .values(stopped_at=now, stop_reason=reason)
        )
        detail = {"key": row.key, "name": row.name, "cluster_id": row.id, "server": row.server}
        self._audit(
            conn,
            now,
            "cluster_released",
            row.user,
            row.allocation_id,
            actor,
            reason,
            detail | {"workers": row.workers},
        )

    def _close_clusters(self, conn, now, allocation_id: int, actor: str | None) -> None:
        """Close the open clusters of a closing allocation (its server stopped)."""
        query = select(clusters).where(
            clusters.c.allocation_id == allocation_id, clusters.c.stopped_at.is_(None)
        )
        for row in conn.execute(query.order_by(clusters.c.id)).all():
            self._stop_cluster(conn, now, row, SERVER_STOPPED, actor)

    # policies set by operators ----------------------------------------------------------

    def set_policy(self, level: str, name: str, config: Mapping[str, Any], *, actor: str) -> None:
        """Set the operator override of one policy level, audited.

        ``level``: "default" (``name`` ""), "group" or "user" (``name`` the group or user).
        ``config``: a ``PolicyLevel`` config dict ({"max_gpus": 2, "window": "1d", ...});
        it becomes the whole override of that level (fields it leaves out fall back to the
        config file's); ``{}`` removes the override. ``actor``: who, for the audit log.

        Everything is validated before anything is written: a bad level, name or value
        raises ``PolicyError`` naming it (``override.users['bob'].max_gpus must be ...``)
        and the ledger is unchanged. The override (stored in ``PolicyLevel.to_config()``
        form: durations in seconds, profiles sorted) and a ``limit_changed`` audit event
        with detail ``{level, name, old, new}`` (``None`` for "no override") are written in
        one transaction; the event's ``user`` is ``name`` for a user level. Setting the
        override a level already has writes nothing.
        """
        setting = override_setting(level, name)
        name = name or ""
        actor = _check_name("actor", actor)
        if not isinstance(config, Mapping):  # PolicyLevel would read None as {}: "remove"
            raise PolicyError(
                f"{setting} must be a dict of limits, not {config!r}", setting=setting
            )
        new = PolicyLevel(config, setting=setting).to_config() or None
        target = (overrides_table.c.level == level) & (overrides_table.c.name == name)

        def run(conn: Connection, now: datetime) -> None:
            row = conn.execute(select(overrides_table).where(target)).first()
            old = None if row is None else row.config
            if old == new:
                return
            if new is None:
                conn.execute(delete(overrides_table).where(target))
            elif row is None:
                conn.execute(
                    insert(overrides_table).values(
                        level=level, name=name, config=new, changed_at=now, changed_by=actor
                    )
                )
            else:
                conn.execute(
                    update(overrides_table)
                    .where(target)
                    .values(config=new, changed_at=now, changed_by=actor)
                )
            detail = {"level": level, "name": name, "old": old, "new": new}
            user = name if level == "user" else None
            reason = "override_removed" if new is None else "override_set"
            self._audit(conn, now, "limit_changed", user, None, actor, reason, detail)

        self._write(run)

    def policy_overrides(self) -> dict[str, Any]:
        """The operators' overrides, shaped for ``PolicySet.with_overrides``:
        ``{"defaults": {...}, "groups": {name: {...}}, "users": {name: {...}}}``
        (config form; empty where none are set)."""
        out: dict[str, Any] = {"defaults": {}, "groups": {}, "users": {}}
        query = select(overrides_table).order_by(overrides_table.c.level, overrides_table.c.name)
        with self._transaction(write=False) as (conn, _):
            for row in conn.execute(query):
                if row.level == "default":
                    out["defaults"] = row.config
                else:
                    out[OVERRIDE_LEVELS[row.level]][row.name] = row.config
        return out

    # queries --------------------------------------------------------------------------

    def _get(self, conn: Connection, allocation_id: int) -> Allocation:
        row = conn.execute(select(allocations).where(allocations.c.id == allocation_id)).one()
        return _allocation(row)

    def _open(self, conn: Connection, user: str | None) -> list[Allocation]:
        query = select(allocations).where(allocations.c.ended_at.is_(None))
        if user is not None:
            query = query.where(allocations.c.user == user)
        return [_allocation(row) for row in conn.execute(query.order_by(allocations.c.id))]

    def allocation(self, allocation_id: int) -> Allocation | None:
        with self._transaction(write=False) as (conn, _):
            row = conn.execute(select(allocations).where(allocations.c.id == allocation_id)).first()
            return None if row is None else _allocation(row)

    def open_allocations(self, user: str | None = None) -> list[Allocation]:
        with self._transaction(write=False) as (conn, _):
            return self._open(conn, user)

    def find_open(self, user: str, server: str) -> Allocation | None:
        with self._transaction(write=False) as (conn, _):
            row = conn.execute(
                select(allocations).where(
                    allocations.c.user == user,
                    allocations.c.server == server,
                    allocations.c.ended_at.is_(None),
                )
            ).first()
            return None if row is None else _allocation(row)

    def usage(self, user: str, since_seconds_ago: float) -> Usage:
        """GPU-seconds and joules of ``user`` in the last ``since_seconds_ago`` seconds
        (allocations straddling the window's start count pro rata; running ones up to now),
        and the GPUs they hold now."""
        with self._transaction(write=False) as (conn, now):
            return self._usage(conn, now, user, since_seconds_ago)

    def _usage(self, conn: Connection, now: datetime, user: str, window: float) -> Usage:
        start = now - timedelta(seconds=window)
        rows = conn.execute(
            select(allocations).where(
                allocations.c.user == user,
                (allocations.c.ended_at.is_(None)) | (allocations.c.ended_at > start),
            )
        )
        gpu_seconds = energy = 0.0
        open_gpus = 0
        for row in rows:
            if row.ended_at is None:
                open_gpus += row.gpus
                end = max(now, row.last_accrued_at)
                total = row.gpu_seconds + row.gpus * (end - row.last_accrued_at).total_seconds()
            else:
                end, total = row.ended_at, row.gpu_seconds
            span = (end - row.granted_at).total_seconds()
            inside = _overlap(row.granted_at, end, start, now)
            fraction = inside / span if span > 0 else float(row.granted_at >= start)
            gpu_seconds += total * fraction
            energy += row.energy_joules * fraction
        return Usage(gpu_seconds=gpu_seconds, energy_joules=energy, open_gpus=open_gpus)

    def allocations_since(self, since_seconds_ago: float) -> list[Allocation]:
        """Allocations open now or ended in the last ``since_seconds_ago`` seconds."""
        with self._transaction(write=False) as (conn, now):
            start = now - timedelta(seconds=since_seconds_ago)
            query = select(allocations).where(
                allocations.c.ended_at.is_(None) | (allocations.c.ended_at > start)
            )
            return [_allocation(row) for row in conn.execute(query.order_by(allocations.c.id))]

    def totals_by_user(self) -> dict[str, tuple[float, float]]:
        """All-time accrued (GPU-seconds, joules) by user: monotonic, for counters."""
        query = select(
            allocations.c.user,
            func.sum(allocations.c.gpu_seconds),
            func.sum(allocations.c.energy_joules),
        ).group_by(allocations.c.user)
        with self._transaction(write=False) as (conn, _):
            return {user: (float(s or 0), float(j or 0)) for user, s, j in conn.execute(query)}

    def decision_counts(self) -> dict[tuple[str, str | None], int]:
        """How many admissions were granted, and denied by reason code, ever."""
        query = (
            select(audit_events.c.action, audit_events.c.reason, func.count())
            .where(audit_events.c.action.in_(("granted", "denied")))
            .group_by(audit_events.c.action, audit_events.c.reason)
        )
        with self._transaction(write=False) as (conn, _):
            return {(action, reason): n for action, reason, n in conn.execute(query)}

    def audit(
        self,
        user: str | None = None,
        *,
        limit: int = 100,
        action: str | None = None,
        since_id: int | None = None,
    ) -> list[AuditEvent]:
        """Audit events, newest first; ``since_id`` keeps those with a larger id."""
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if user is not None:
            query = query.where(audit_events.c.user == user)
        if action is not None:
            query = query.where(audit_events.c.action == action)
        if since_id is not None:
            query = query.where(audit_events.c.id > since_id)
        with self._transaction(write=False) as (conn, _):
            return [_audit_event(row) for row in conn.execute(query)]

    def verify(self) -> list[str]:
        """Consistency problems (an empty list when there are none): every open allocation
        leases exactly its devices, closed ones lease none, and counts match; every open
        cluster belongs to an open allocation of its user and server and uses only that
        allocation's devices, none of them shared with another open cluster."""
        problems = []
        with self._transaction(write=False) as (conn, _):
            leases: dict[int, set[str]] = {}
            for uuid, allocation_id in conn.execute(select(device_leases)):
                leases.setdefault(allocation_id, set()).add(uuid)
            by_id = {}
            for row in conn.execute(select(allocations)):
                by_id[row.id] = row
                devices = set(row.device_uuids or ())
                held = leases.pop(row.id, set())
                if len(devices) != row.gpus or len(row.device_uuids or ()) != row.gpus:
                    problems.append(f"allocation {row.id}: {row.gpus} GPUs but {devices}")
                if row.ended_at is None and held != devices:
                    problems.append(f"open allocation {row.id} leases {held}, not {devices}")
                if row.ended_at is not None and held:
                    problems.append(f"closed allocation {row.id} still leases {held}")
            problems += [f"leases {v} of unknown allocation {k}" for k, v in leases.items()]
            problems += self._cluster_problems(conn, by_id)
            for row in conn.execute(select(overrides_table)):
                problems += _override_problems(row.level, row.name, row.config)
        return problems

    @staticmethod
    def _cluster_problems(conn: Connection, allocations_by_id: Mapping[int, Any]) -> list[str]:
        problems = []
        used: dict[tuple[int, str], int] = {}  # (allocation, device) -> open cluster
        for row in conn.execute(select(clusters).order_by(clusters.c.id)):
            devices = list(row.devices or ())
            if len(devices) != row.gpus or len(set(devices)) != len(devices):
                problems.append(f"cluster {row.id}: {row.gpus} GPUs but devices {devices}")
            if row.stopped_at is not None:
                continue
            allocation = allocations_by_id.get(row.allocation_id)
            if allocation is None or allocation.ended_at is not None:
                problems.append(
                    f"open cluster {row.id} belongs to allocation {row.allocation_id}, "
                    "which is not open"
                )
                continue
            if (allocation.user, allocation.server) != (row.user, row.server):
                problems.append(
                    f"open cluster {row.id} of {row.user}/{row.server} belongs to allocation "
                    f"{allocation.id} of {allocation.user}/{allocation.server}"
                )
            outside = set(devices) - set(allocation.device_uuids or ())
            if outside:
                problems.append(
                    f"open cluster {row.id} uses {sorted(outside)}, not in allocation "
                    f"{allocation.id}"
                )
            for uuid in devices:
                other = used.setdefault((row.allocation_id, uuid), row.id)
                if other != row.id:
                    problems.append(f"open clusters {other} and {row.id} both use {uuid}")
        return problems

    # backup ---------------------------------------------------------------------------

    def backup(self, path: str | os.PathLike) -> dict[str, int]:
        """Write every table, from one snapshot, to a JSON file (atomically replaced).
        Returns the row count of allocations, device_leases and audit_events, and of
        policy_overrides and clusters when there are any (the count's keys predate those
        tables)."""
        with self._transaction(write=False) as (conn, now):
            tables = {
                table.name: [
                    _to_json(dict(row._mapping))
                    for row in conn.execute(select(table).order_by(*table.primary_key.columns))
                ]
                for table in _BACKUP_TABLES
            }
        document = {
            "format": BACKUP_FORMAT,
            "version": BACKUP_VERSION,
            "taken_at": now.isoformat(),
            "tables": tables,
        }
        path = Path(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        return _counts(tables)

    def restore(self, path: str | os.PathLike, *, replace: bool = False) -> dict[str, int]:
        """Load a :meth:`backup` file in one transaction. An empty ledger is required
        unless ``replace``, which deletes what is there first. Returns the row counts (as
        :meth:`backup`). A file without ``policy_overrides`` or ``clusters`` (written before
        those tables) restores none; overrides that don't validate refuse the whole file."""
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        if not isinstance(document, dict) or document.get("format") != BACKUP_FORMAT:
            raise ValueError(f"{path} is not a gpulab ledger backup")
        if document.get("version") != BACKUP_VERSION:
            raise ValueError(f"{path}: unsupported backup version {document.get('version')!r}")
        tables = {t.name: t for t in _BACKUP_TABLES}
        optional = {t.name for t in _OPTIONAL_TABLES}
        try:
            rows = {
                name: [
                    _from_json(tables[name], r)
                    for r in document["tables"].get(name, [] if name in optional else None)
                ]
                for name in tables
            }
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{path}: the backup's tables are incomplete or malformed") from None
        for row in rows[overrides_table.name]:
            problems = _override_problems(row.get("level"), row.get("name"), row.get("config"))
            if problems:
                raise ValueError(f"{path}: {problems[0]}")

        def run(conn: Connection, now: datetime) -> dict[str, int]:
            present = sum(
                conn.execute(select(func.count()).select_from(t)).scalar() for t in tables.values()
            )
            if present and not replace:
                raise ValueError("the ledger is not empty; restore with replace=True to overwrite")
            for table in (
                reservation_draws,
                reservations_table,
                clusters,
                device_leases,
                allocations,
                audit_events,
                overrides_table,
            ):
                conn.execute(delete(table))
            for table in _BACKUP_TABLES:
                if rows[table.name]:
                    conn.execute(insert(table), rows[table.name])
            if self.backend == "postgresql":
                for table in (allocations, audit_events, clusters, reservations_table):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                        )
                    )
            return _counts(rows)

        return self._write(run)


# In insertion order: a cluster refers to its allocation, a draw to its allocation and
# reservation.
_BACKUP_TABLES = (
    allocations,
    device_leases,
    audit_events,
    overrides_table,
    clusters,
    reservations_table,
    reservation_draws,
)
# Tables added after the backup format: a file without them restores none, and counts
# show them only when they have rows.
_OPTIONAL_TABLES = (overrides_table, clusters, reservations_table, reservation_draws)


def _counts(tables: Mapping[str, list]) -> dict[str, int]:
    counts = {name: len(rows) for name, rows in tables.items()}
    for optional in (t.name for t in _OPTIONAL_TABLES):
        if not counts.get(optional):
            counts.pop(optional, None)
    return counts


def _override_problems(level: Any, name: Any, config: Any) -> list[str]:
    """Why a stored override is unusable (an empty list when it is fine)."""
    try:
        setting = override_setting(level, name)
        if not config:
            raise PolicyError(f"{setting} is empty (a removed override has no row)", setting="")
        PolicyLevel(config, setting=setting)
    except PolicyError as e:
        return [f"policy override ({level!r}, {name!r}): {e}"]
    return []


def _check_energy(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"energy must be a finite number of joules, not {value!r}")
    if value < 0:
        raise ValueError(f"energy must be 0 or more joules, not {value!r}")
    return float(value)


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _from_json(table, row: dict[str, Any]) -> dict[str, Any]:
    unknown = set(row) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"backup row of {table.name} has unknown columns {sorted(unknown)}")
    out = {}
    for key, value in row.items():
        column = table.columns[key]
        if value is not None and isinstance(column.type, UTCDateTime):
            value = datetime.fromisoformat(value)
        out[key] = value
    return out


def _configure_sqlite(engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        mode = conn.get_execution_options().get("gpulab_sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")
