"""Class-time GPU reservations: N GPUs (or N MIG slices of one size) held for a group
during a window, so a workshop gets its GPUs at 10:00 even when researchers are busy.

A reservation is a ledger row (``reservations``): a group, a count, a pool (whole GPUs, or
the MIG slices of one size such as "1g.10gb"), and a window ``[starts_at, ends_at)``.
``reserve``, ``cancel`` and admission all run inside the ledger's write transaction (the
lock ``Ledger.admit`` takes), so a reservation and a spawn never interleave.

How admission counts (``admission``, called by ``Ledger.admit`` for GPU requests):

- **Members draw on their reservation only.** During the window a member of the group
  (any of the user's groups) who asks for devices of the reserved pool draws on the
  reservation: granted while its draws plus the request fit in N, refused with
  "reservation_full" (409) beyond it, even if other GPUs are free. The class gets its N
  and no more; outside the window members are ordinary users. A grant that draws is
  recorded in ``reservation_draws`` (allocation -> reservation); a draw stops counting
  when its allocation closes. Allocations granted before the window are not draws.
- **Everyone else sees capacity minus the unused reserved devices** ("reserved", 409,
  the message naming the workshop and until when). Unused = N minus the open draws for
  a reservation in its window, all N for one that has not started.
- **Looking ahead.** A server may still be running when a later window opens, and
  reservations never stop anyone's server. So a request is checked against every
  reservation whose window starts before the request's session could end: ``now`` plus
  the user's ``max_session`` (no limit: every future reservation). A researcher whose
  sessions are limited to 2 hours may use reserved GPUs until 2 hours before the class;
  one without a session limit may not take them at all while a reservation is upcoming.
  That is what makes a reservation a promise rather than a hope.

Limits of the promise: allocations granted before a reservation was made are not stopped
when its window opens; ``reserve`` reports how many devices of the pool are held now.

Reservations that overlap in time may together hold at most the pool's size (the caller
passes it: ``capacity``); ``reserve`` refuses more with a message naming the overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    func,
    insert,
    select,
    update,
)

from gpulab.quota.models import UTCDateTime, allocations, metadata

if TYPE_CHECKING:
    from gpulab.quota.ledger import Ledger

# The pool of whole GPUs, as stored; a MIG pool is its slice profile ("1g.10gb").
WHOLE_GPUS = ""
# Group names a reservation accepts: JupyterHub group names as gpulab creates them.
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,254}")
MIG_PROFILE = re.compile(r"[0-9]+g\.[0-9]+gb(\+me)?")
MAX_GPUS = 100_000  # a sanity bound that keeps numbers inside the database's INTEGER

reservations_table = Table(
    "reservations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("group", String(255), nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("pool", String(64), nullable=False, default=WHOLE_GPUS),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=True),
    Column("cancelled_at", UTCDateTime, nullable=True),
    Column("cancelled_by", String(255), nullable=True),
    CheckConstraint("gpus >= 1", name="gpus"),
    CheckConstraint("starts_at < ends_at", name="window"),
    Index("ix_reservations_pool_ends_at", "pool", "ends_at"),
    sqlite_autoincrement=True,
)

# Which reservation an allocation draws on (only allocations that draw have a row).
reservation_draws = Table(
    "reservation_draws",
    metadata,
    Column("allocation_id", Integer, ForeignKey("allocations.id"), primary_key=True),
    Column("reservation_id", Integer, ForeignKey("reservations.id"), nullable=False, index=True),
)


class ReservationError(ValueError):
    """A reservation request is invalid or can't be held; nothing was written. ``field``
    names what to fix ("group", "gpus", "from", "until", "mig", "capacity", "id")."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


class ReservationConflict(ReservationError):
    """Reservations overlapping the new one would together hold more than the pool.
    ``overlapping`` lists the ids of those that overlap it at the worst moment."""

    def __init__(self, message: str, *, overlapping: list[int]):
        super().__init__(message, field="gpus")
        self.overlapping = overlapping


class UnknownReservation(KeyError):
    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Reservation:
    id: int
    group: str
    gpus: int
    mig: str | None  # None: whole GPUs; else the MIG slice profile
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    created_by: str | None
    cancelled_at: datetime | None
    in_use: int = 0  # devices drawn on it now (open allocations)
    held_now: int = 0  # devices of its pool held by anyone when it was made/read

    @property
    def pool(self) -> str:
        return self.mig or "GPUs"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "gpus": self.gpus,
            "mig": self.mig,
            "from": self.starts_at.isoformat(),
            "until": self.ends_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "cancelled_at": None if self.cancelled_at is None else self.cancelled_at.isoformat(),
            "in_use": self.in_use,
        }


def _reservation(row, in_use: int = 0, held_now: int = 0) -> Reservation:
    return Reservation(
        id=row.id,
        group=row.group,
        gpus=row.gpus,
        mig=row.pool or None,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_at=row.created_at,
        created_by=row.created_by,
        cancelled_at=row.cancelled_at,
        in_use=in_use,
        held_now=held_now,
    )


# validation -------------------------------------------------------------------------


def parse_time(value: object, field: str) -> datetime:
    """An aware datetime from an ISO 8601 string with a timezone ("2026-11-23T10:00+01:00",
    "...Z") or an aware datetime; ``ReservationError`` naming ``field`` otherwise."""
    example = "like 2026-11-23T10:00+01:00 or 2026-11-23T09:00Z"
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ReservationError(
                f"{field} must be an ISO 8601 time {example}, not {value!r:.60}", field=field
            ) from None
    else:
        raise ReservationError(
            f"{field} must be an ISO 8601 time {example}, not {value!r:.60}", field=field
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ReservationError(
            f"{field} must include a timezone ({example}), not {value!r:.60}", field=field
        )
    return parsed


def check_group(group: object) -> str:
    if not isinstance(group, str) or not GROUP_NAME.fullmatch(group):
        raise ReservationError(
            "group must be a group name of 1 to 255 letters, digits, '.', '_', '@' or '-' "
            f"(starting with a letter or digit), not {group!r:.80}",
            field="group",
        )
    return group


def _check_count(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_GPUS:
        raise ReservationError(
            f"{field} must be a whole number from {minimum} to {MAX_GPUS}, not {value!r:.40}",
            field=field,
        )
    return value


def check_mig(mig: object) -> str:
    """The stored pool: "" for whole GPUs (``mig`` None), else the MIG profile."""
    if mig is None or mig == "":
        return WHOLE_GPUS
    if not isinstance(mig, str) or not MIG_PROFILE.fullmatch(mig):
        raise ReservationError(
            f"mig must be a MIG slice profile like '1g.10gb' (or none for whole GPUs), "
            f"not {mig!r:.40}",
            field="mig",
        )
    return mig


# formatting -------------------------------------------------------------------------


def clock(at: datetime, now: datetime) -> str:
    """"14:00 UTC" today, "2026-11-24 14:00 UTC" another day."""
    at, now = at.astimezone(now.tzinfo), now
    return at.strftime("%H:%M UTC" if at.date() == now.date() else "%Y-%m-%d %H:%M UTC")


def _devices(n: int, mig: str) -> str:
    kind = f"{mig} slice" if mig else "GPU"
    return f"{n} {kind}{'' if n == 1 else 's'}"


def _describe(row, now: datetime) -> str:
    return (
        f"reservation {row.id} ({_devices(row.gpus, row.pool)} for {row.group!r}, "
        f"{clock(row.starts_at, now)} to {clock(row.ends_at, now)})"
    )


# the ledger's transactions ----------------------------------------------------------


def _live(conn: Connection, now: datetime, pool: str, until: datetime | None = None) -> list:
    """Reservations of ``pool`` not cancelled and not over, starting before ``until``."""
    query = select(reservations_table).where(
        reservations_table.c.pool == pool,
        reservations_table.c.cancelled_at.is_(None),
        reservations_table.c.ends_at > now,
    )
    if until is not None:
        query = query.where(reservations_table.c.starts_at < until)
    query = query.order_by(reservations_table.c.starts_at, reservations_table.c.id)
    return list(conn.execute(query))


def _draws(conn: Connection, ids: Iterable[int]) -> dict[int, int]:
    """Devices drawn now on each reservation: its open allocations' GPUs."""
    ids = list(ids)
    if not ids:
        return {}
    query = (
        select(reservation_draws.c.reservation_id, func.sum(allocations.c.gpus))
        .join(allocations, allocations.c.id == reservation_draws.c.allocation_id)
        .where(reservation_draws.c.reservation_id.in_(ids), allocations.c.ended_at.is_(None))
        .group_by(reservation_draws.c.reservation_id)
    )
    return {rid: int(n or 0) for rid, n in conn.execute(query)}


@dataclass(frozen=True)
class Refusal:
    """Why admission refuses a request: ``Ledger._decide`` audits and raises it."""

    reason: str  # "reserved" or "reservation_full"
    message: str
    figures: dict[str, Any]


def admission(
    conn: Connection,
    now: datetime,
    *,
    groups: Iterable[str],
    gpus: int,
    mig: str | None,
    free: int,
    horizon_seconds: float | None,
) -> int | None | Refusal:
    """The reservation a request of ``gpus`` devices draws on (its id), None when it draws
    on general capacity, or a :class:`Refusal` (the module docstring says the rule).

    ``free``: unleased devices of the request's pool; ``horizon_seconds``: how long the
    server may run (the user's ``max_session``; None: no limit). Runs in the ledger's
    write transaction, after the plain capacity check.
    """
    pool = check_mig(mig)
    until = None if horizon_seconds is None else now + timedelta(seconds=horizon_seconds)
    rows = _live(conn, now, pool, until)
    if not rows:
        return None
    groups = set(groups)
    active = [r for r in rows if r.starts_at <= now]
    drawn = _draws(conn, (r.id for r in active))
    room = {r.id: max(0, r.gpus - drawn.get(r.id, 0)) for r in active}

    drawing = None
    mine = [r for r in active if r.group in groups]
    if mine:
        drawing = max(mine, key=lambda r: (room[r.id], -r.id))
        if room[drawing.id] < gpus:
            in_use = drawing.gpus - room[drawing.id]
            return Refusal(
                "reservation_full",
                f"your workshop {drawing.group!r} has {_devices(drawing.gpus, pool)} reserved "
                f"until {clock(drawing.ends_at, now)}; {in_use} "
                f"{'is' if in_use == 1 else 'are'} in use and this request needs {gpus} "
                "(during the workshop its members use only the reserved devices)",
                {"reservation_id": drawing.id, "reserved": drawing.gpus, "in_use": in_use},
            )

    def held_back(at: datetime) -> list[tuple[Any, int]]:
        return [
            (r, room[r.id] if r.starts_at <= now else r.gpus)
            for r in rows
            if r is not drawing and r.starts_at <= at < r.ends_at
        ]

    moments = [now, *(r.starts_at for r in rows if r.starts_at > now)]
    worst_at, worst = max(
        ((at, held_back(at)) for at in moments), key=lambda item: sum(n for _, n in item[1])
    )
    reserved = sum(n for _, n in worst)
    if free - reserved >= gpus:
        return None if drawing is None else drawing.id
    holders = [(r, n) for r, n in worst if n]

    def when(r) -> str:
        until_end = f"until {clock(r.ends_at, now)}"
        return until_end if r.starts_at <= now else f"from {clock(r.starts_at, now)} {until_end}"

    listed = "; ".join(
        f"{_devices(n, pool)} for workshop {r.group!r} {when(r)}" for r, n in holders
    )
    left = max(0, free - reserved)
    noun = f"{pool} slices" if pool else "GPUs"
    message = (
        f"GPUs are reserved for a workshop: {listed}. Only {left} of the {free} free {noun} "
        f"can be given to you; this request needs {gpus}"
    )
    if worst_at > now:
        if horizon_seconds is None:
            limit = "has no session limit"
        else:
            limit = f"may run until {clock(until, now)}"
        message += f" and your server {limit}, so it would still hold them then"
    return Refusal(
        "reserved",
        message,
        {
            "reserved": reserved,
            "free": free,
            "reservations": [r.id for r, _ in holders],
            "at": worst_at.isoformat(),
        },
    )


def record_draw(conn: Connection, allocation_id: int, reservation_id: int) -> None:
    conn.execute(
        insert(reservation_draws).values(
            allocation_id=allocation_id, reservation_id=reservation_id
        )
    )


def reserve(
    ledger: Ledger,
    group: str,
    gpus: int,
    start: str | datetime,
    end: str | datetime,
    *,
    capacity: int,
    mig: str | None = None,
    actor: str | None = None,
) -> Reservation:
    """Hold ``gpus`` devices (whole GPUs, or ``mig`` slices) for ``group`` from ``start``
    until ``end`` (ISO 8601 with a timezone, or aware datetimes).

    ``capacity``: the pool's size on the node (whole GPUs, or slices of ``mig``). Every
    argument is checked before anything is written (``ReservationError`` naming it); then,
    in one ledger transaction: ``end`` must be in the future, and the reservations of the
    pool that overlap the window, with this one, must fit in ``capacity`` at every moment
    (else ``ReservationConflict`` naming them). The row and a ``reservation_added`` audit
    event are written together. ``held_now`` of the result: devices of the pool held now.
    """
    group = check_group(group)
    gpus = _check_count("gpus", gpus, 1)
    capacity = _check_count("capacity", capacity, 0)
    pool = check_mig(mig)
    starts_at = parse_time(start, "from")
    ends_at = parse_time(end, "until")
    if not starts_at < ends_at:
        raise ReservationError(
            f"from ({starts_at.isoformat()}) must be before until ({ends_at.isoformat()})",
            field="until",
        )
    if gpus > capacity:
        raise ReservationError(
            f"gpus: the node has {_devices(capacity, pool)}; a reservation of {gpus} can "
            "never be held",
            field="gpus",
        )

    def run(conn: Connection, now: datetime) -> Reservation:
        if ends_at <= now:
            raise ReservationError(
                f"until ({ends_at.isoformat()}) is in the past (now {now.isoformat()})",
                field="until",
            )
        overlapping = [r for r in _live(conn, now, pool, ends_at) if r.ends_at > starts_at]
        moments = [max(starts_at, now)]
        moments += [r.starts_at for r in overlapping if moments[0] < r.starts_at < ends_at]
        worst: list = []
        for at in moments:
            active = [r for r in overlapping if r.starts_at <= at < r.ends_at]
            if sum(r.gpus for r in active) > sum(r.gpus for r in worst):
                worst = active
        together = gpus + sum(r.gpus for r in worst)
        if together > capacity:
            raise ReservationConflict(
                f"{_devices(gpus, pool)} for {group!r} from {clock(starts_at, now)} until "
                f"{clock(ends_at, now)} overlap "
                + ", ".join(_describe(r, now) for r in worst)
                + f": together {together}, but the node has {_devices(capacity, pool)}",
                overlapping=[r.id for r in worst],
            )
        reservation_id = conn.execute(
            insert(reservations_table).values(
                group=group,
                gpus=gpus,
                pool=pool,
                starts_at=starts_at,
                ends_at=ends_at,
                created_at=now,
                created_by=actor,
            )
        ).inserted_primary_key[0]
        row = _get(conn, reservation_id)
        detail = {"reservation": _reservation(row).to_json(), "capacity": capacity}
        ledger._audit(conn, now, "reservation_added", None, None, actor, None, detail)
        held = _held(conn, pool)
        return _reservation(row, held_now=held)

    return ledger._write(run)


def _held(conn: Connection, pool: str) -> int:
    """Devices of ``pool`` leased now: whole-GPU or MIG leases are told apart by the
    open allocations' devices (a MIG UUID starts with "MIG-")."""
    total = 0
    query = select(allocations.c.device_uuids).where(allocations.c.ended_at.is_(None))
    for (uuids,) in conn.execute(query):
        for uuid in uuids or ():
            if uuid.startswith("MIG-") == bool(pool):
                total += 1
    return total


def _get(conn: Connection, reservation_id: int):
    return conn.execute(
        select(reservations_table).where(reservations_table.c.id == reservation_id)
    ).one()


def list_reservations(
    ledger: Ledger, *, group: str | None = None, include_past: bool = False
) -> list[Reservation]:
    """Reservations, earliest first: those not over and not cancelled, or (``include_past``)
    all of them; with ``in_use``, the devices drawn on each now."""
    query = select(reservations_table).order_by(
        reservations_table.c.starts_at, reservations_table.c.id
    )
    if group is not None:
        query = query.where(reservations_table.c.group == group)
    with ledger._transaction(write=False) as (conn, now):
        if not include_past:
            query = query.where(
                reservations_table.c.cancelled_at.is_(None), reservations_table.c.ends_at > now
            )
        rows = list(conn.execute(query))
        drawn = _draws(conn, (r.id for r in rows if r.starts_at <= now < r.ends_at))
        return [_reservation(r, in_use=drawn.get(r.id, 0)) for r in rows]


def cancel(ledger: Ledger, reservation_id: int, *, actor: str | None = None) -> Reservation:
    """Cancel a reservation (its devices are free for everyone at once; servers drawing
    on it keep running), audited ``reservation_cancelled``. Cancelling a cancelled one
    changes nothing. An unknown id raises :class:`UnknownReservation`."""
    reservation_id = _check_count("id", reservation_id, 1)

    def run(conn: Connection, now: datetime) -> Reservation:
        row = conn.execute(
            select(reservations_table).where(reservations_table.c.id == reservation_id)
        ).first()
        if row is None:
            raise UnknownReservation(f"no reservation {reservation_id} in the ledger")
        if row.cancelled_at is None:
            conn.execute(
                update(reservations_table)
                .where(reservations_table.c.id == reservation_id)
                .values(cancelled_at=now, cancelled_by=actor)
            )
            detail = {"reservation": _reservation(row).to_json()}
            ledger._audit(conn, now, "reservation_cancelled", None, None, actor, None, detail)
            row = _get(conn, reservation_id)
        return _reservation(row)

    return ledger._write(run)
