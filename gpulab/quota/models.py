"""The ledger's tables (SQLAlchemy 2.0 declarative, with their own metadata).

- ``allocations``: one row per grant; ``ended_at`` is NULL while it is open.
- ``device_leases``: one row per device held by an open allocation. ``device_uuid`` is the
  primary key, so the database itself refuses to lease one device twice, whatever the code
  above it does. A lease row is deleted when its allocation closes.
- ``audit_events``: append-only log of every decision (an UPDATE is refused by a trigger).
- ``policy_overrides``: quota policies operators set at run time (``Ledger.set_policy``), one
  row per level: ``level`` "default" (``name`` ""), "group" or "user" (``name`` the group or
  user), ``config`` the level's config dict (``PolicyLevel.to_config()`` form). They win over
  the config file's policies, field by field (``PolicySet.with_overrides``); every change is
  audited as ``limit_changed``.
- ``clusters``: one row per Dask cluster a user started from a server (``Ledger.admit_cluster``);
  ``stopped_at`` is NULL while it is open. ``key`` is the client's id of the cluster (unique
  among the user's open clusters), ``allocation_id`` the allocation of the server it runs in,
  ``devices`` the device UUIDs of that allocation its workers use. Open clusters count
  against ``Policy.max_dask_workers``; closing the server's allocation closes them.

Timestamps are UTC. On PostgreSQL they are ``timestamptz``; on SQLite, text in UTC
(``YYYY-MM-DD HH:MM:SS.ffffff``) without an offset. :class:`UTCDateTime` turns both into
aware UTC datetimes and refuses naive ones, so local time never leaks in. Their values come
from the database clock (see ``ledger.Ledger._db_now``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Audit actions. ``granted``/``denied`` are admission decisions; ``released``/``culled``
# close an allocation (``culled`` when the reason is an enforcement, see CULL_REASONS);
# the rest are recorded by other parts of gpulab through ``Ledger.record_event``.
# ``cluster_*`` are the Dask clusters' decisions and changes (``Ledger.admit_cluster`` ...).
ACTIONS = frozenset(
    {
        "granted",
        "denied",
        "released",
        "culled",
        "reconciled",
        "warned",
        "limit_changed",
        "cluster_granted",
        "cluster_denied",
        "cluster_scaled",
        "cluster_released",
    }
)
# Release reasons that are enforcement (the user didn't ask): audited as ``culled``.
CULL_REASONS = frozenset({"culled", "idle", "gpu_idle", "budget", "session_limit"})


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime in, an aware UTC datetime out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"ledger timestamps must be timezone-aware, not {value!r}")
        value = value.astimezone(UTC)
        # SQLite stores text: keep it naive UTC so every row has one format and sorts.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator):
    """JSON kept as text (portable, readable with any SQL client)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value: str | None, dialect) -> Any:
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    # Our own metadata: never JupyterHub's (the ledger may live in the hub's database).
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )


class AllocationRow(Base):
    __tablename__ = "allocations"
    __table_args__ = (
        Index("ix_allocations_user_ended_at", "user", "ended_at"),
        # One open allocation per (user, server): a server holds one grant at a time.
        Index(
            "uq_allocations_open_server",
            "user",
            "server",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(255), default="")
    device_uuids: Mapped[list] = mapped_column(JSONText, default=list)
    gpus: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    energy_joules: Mapped[float] = mapped_column(Float, default=0.0)
    last_accrued_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())


class DeviceLeaseRow(Base):
    __tablename__ = "device_leases"

    # The primary key is the guarantee: one device, at most one open lease.
    device_uuid: Mapped[str] = mapped_column(String(255), primary_key=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"), index=True)


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_user_id", "user", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    actor: Mapped[str | None] = mapped_column(String(255), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    allocation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSONText, nullable=True)


class PolicyOverrideRow(Base):
    __tablename__ = "policy_overrides"
    __table_args__ = (
        CheckConstraint("level IN ('default', 'group', 'user')", name="level"),
        # The defaults have one level, named ""; a group or a user has a name.
        CheckConstraint("(level = 'default') = (name = '')", name="name"),
    )

    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    config: Mapped[dict] = mapped_column(JSONText)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    changed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class ClusterRow(Base):
    __tablename__ = "clusters"
    __table_args__ = (
        Index("ix_clusters_user_stopped_at", "user", "stopped_at"),
        Index("ix_clusters_allocation_id_stopped_at", "allocation_id", "stopped_at"),
        # One open cluster per (user, key): the client's id names one cluster at a time.
        Index(
            "uq_clusters_open_key",
            "user",
            "key",
            unique=True,
            sqlite_where=text("stopped_at IS NULL"),
            postgresql_where=text("stopped_at IS NULL"),
        ),
        CheckConstraint("workers >= 0", name="workers"),
        CheckConstraint("gpus >= 0", name="gpus"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(255), default="")
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    workers: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer)
    devices: Mapped[list] = mapped_column(JSONText, default=list)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)


allocations = AllocationRow.__table__
device_leases = DeviceLeaseRow.__table__
audit_events = AuditEventRow.__table__
policy_overrides = PolicyOverrideRow.__table__
clusters = ClusterRow.__table__
metadata = Base.metadata

# Append-only, enforced by the database: an UPDATE of an audit event fails. (DELETE stays
# possible for ``Ledger.restore(replace=True)``, the one operator path that rewrites history.)
event.listen(
    audit_events,
    "after_create",
    DDL(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    ).execute_if(dialect="sqlite"),
)
event.listen(
    audit_events,
    "after_create",
    DDL(
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$"
    ).execute_if(dialect="postgresql"),
)
event.listen(
    audit_events,
    "after_create",
    DDL(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    ).execute_if(dialect="postgresql"),
)
