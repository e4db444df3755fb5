"""Class-time reservations in the ledger, on SQLite and PostgreSQL: who may take reserved
GPUs in and outside the window, overlapping reservations, bad input, concurrency."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gpulab.quota.ledger import Grant, Ledger, QuotaDenied
from gpulab.quota.policy import Policy
from gpulab.quota.reservations import (
    ReservationConflict,
    ReservationError,
    UnknownReservation,
    cancel,
    list_reservations,
    reservation_draws,
    reservations_table,
    reserve,
)
from tests.quota.conftest import DEVICES

NODE = DEVICES[:4]
HOUR = 3600.0


def at(ledger: Ledger, minutes: float) -> str:
    """ISO 8601 (with offset) ``minutes`` from the database's now."""
    return (ledger.db_now() + timedelta(minutes=minutes)).isoformat()


def admit(ledger, user, gpus, *, groups=(), session=None, server="", devices=NODE, mig=None):
    return ledger.admit(
        user=user,
        server=server,
        gpus=gpus,
        policy=Policy(max_session_seconds=session),
        devices=devices,
        groups=groups,
        mig=mig,
    )


def denied(ledger, *args, **kwargs) -> QuotaDenied:
    with pytest.raises(QuotaDenied) as info:
        admit(ledger, *args, **kwargs)
    return info.value


def shift(ledger: Ledger, reservation_id: int, minutes: float) -> None:
    """Move a reservation's window (the test hook for time, like conftest.backdate)."""
    delta = timedelta(minutes=minutes)
    with ledger.engine.begin() as conn:
        row = conn.execute(
            select(reservations_table).where(reservations_table.c.id == reservation_id)
        ).one()
        conn.execute(
            update(reservations_table)
            .where(reservations_table.c.id == reservation_id)
            .values(starts_at=row.starts_at + delta, ends_at=row.ends_at + delta)
        )


def test_in_the_window_reserved_gpus_go_to_the_group_only(ledger):
    r = reserve(ledger, "ml101", 2, at(ledger, -1), at(ledger, 60), capacity=4, actor="op")
    assert (r.group, r.gpus, r.mig, r.created_by) == ("ml101", 2, None, "op")

    # A researcher sees 4 - 2 reserved GPUs.
    e = denied(ledger, "rita", 3)
    assert (e.reason, e.status_code) == ("reserved", 409)
    assert "reserved for a workshop: 2 GPUs for workshop 'ml101' until" in str(e)
    assert "Only 2 of the 4 free GPUs can be given to you; this request needs 3" in str(e)
    assert [a for a in ledger.open_allocations()] == []
    [event] = ledger.audit(action="denied")
    assert (event.user, event.reason, event.detail["reservations"]) == ("rita", "reserved", [r.id])

    granted = admit(ledger, "rita", 2)
    assert denied(ledger, "rita", 1, server="b").reason == "reserved"

    # The group's members take the reserved ones; the draws are recorded.
    student = admit(ledger, "sam", 2, groups={"ml101", "other"})
    assert set(student.device_uuids) | set(granted.device_uuids) == set(NODE)
    [draw] = ledger.audit(action="granted", user="sam")
    assert draw.detail["reservation_id"] == r.id
    assert [x.in_use for x in list_reservations(ledger)] == [2]

    # Members use only the reservation: beyond it, refused even with a GPU free.
    ledger.release(granted.allocation_id, reason="stopped")
    full = denied(ledger, "sue", 1, groups=["ml101"])
    assert (full.reason, full.status_code) == ("reservation_full", 409)
    assert "'ml101' has 2 GPUs reserved until" in str(full) and "2 are in use" in str(full)
    # ... and what the students hold is no longer held back from others.
    assert isinstance(admit(ledger, "rita", 2), Grant)
    # A student who stops gives the seat back to the class.
    ledger.release(student.allocation_id, reason="stopped")
    assert list_reservations(ledger)[0].in_use == 0
    assert len(admit(ledger, "sue", 2, groups=["ml101"]).device_uuids) == 2
    assert ledger.verify() == []


def test_outside_the_window_everyone_may_use_them_when_their_session_ends_before(ledger):
    r = reserve(ledger, "ml101", 3, at(ledger, 180), at(ledger, 240), capacity=4)
    # Sessions of at most 1 hour end before the class: all 4 GPUs.
    short = admit(ledger, "rita", 4, session=HOUR)
    ledger.release(short.allocation_id, reason="stopped")
    # No session limit: the server could still run at 3 h, so the 3 are held back.
    e = denied(ledger, "rita", 2)
    assert e.reason == "reserved"
    assert "3 GPUs for workshop 'ml101' from " in str(e) and " until " in str(e)
    assert "your server has no session limit, so it would still hold them then" in str(e)
    e = denied(ledger, "rita", 2, session=5 * HOUR)
    assert "your server may run until" in str(e)
    assert isinstance(admit(ledger, "rita", 1), Grant)
    # A member outside their window is an ordinary user: no draw on the future class.
    assert denied(ledger, "sam", 1, groups=["ml101"], server="x").reason == "reserved"

    # The window passed: no reservation applies any more.
    shift(ledger, r.id, -300)
    assert list_reservations(ledger) == []
    assert len(admit(ledger, "rita", 3, server="later").device_uuids) == 3


def test_overlapping_reservations_that_exceed_the_inventory_are_refused(ledger):
    a = reserve(ledger, "ml101", 2, at(ledger, 60), at(ledger, 180), capacity=4)
    b = reserve(ledger, "dl201", 2, at(ledger, 120), at(ledger, 240), capacity=4)
    events = len(ledger.audit())
    with pytest.raises(ReservationConflict) as info:
        reserve(ledger, "cv301", 1, at(ledger, 150), at(ledger, 160), capacity=4)
    message = str(info.value)
    assert f"reservation {a.id} (2 GPUs for 'ml101'" in message
    assert f"reservation {b.id} (2 GPUs for 'dl201'" in message
    assert "together 5, but the node has 4 GPUs" in message
    assert info.value.overlapping == [a.id, b.id] and info.value.field == "gpus"
    assert len(list_reservations(ledger)) == 2 and len(ledger.audit()) == events
    # Touching windows don't overlap; after a ends only b holds GPUs.
    assert reserve(ledger, "cv301", 2, at(ledger, 180), at(ledger, 200), capacity=4).gpus == 2
    # Whole GPUs and MIG slices are separate pools.
    assert reserve(ledger, "cv301", 4, at(ledger, 150), at(ledger, 160), capacity=4,
                   mig="1g.10gb").mig == "1g.10gb"
    # A cancelled reservation holds nothing.
    cancel(ledger, b.id, actor="op")
    assert reserve(ledger, "cv301", 2, at(ledger, 150), at(ledger, 160), capacity=4).gpus == 2


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"gpus": 0}, "gpus", "gpus must be a whole number from 1"),
        ({"gpus": "2"}, "gpus", "gpus must be a whole number from 1"),
        ({"gpus": True}, "gpus", "gpus must be a whole number from 1"),
        ({"gpus": 5}, "gpus", "the node has 4 GPUs; a reservation of 5 can never be held"),
        ({"group": ""}, "group", "group must be a group name"),
        ({"group": "a b"}, "group", "group must be a group name"),
        ({"group": "../etc"}, "group", "group must be a group name"),
        ({"start": "tomorrow"}, "from", "from must be an ISO 8601 time"),
        ({"start": "2026-11-23T10:00"}, "from", "from must include a timezone"),
        ({"end": None}, "until", "until must be an ISO 8601 time"),
        ({"end": "2020-01-01T10:00Z", "start": "2020-01-01T09:00Z"}, "until", "in the past"),
        ({"start": "2030-01-01T10:00Z", "end": "2030-01-01T10:00+00:00"}, "until",
         "must be before until"),
        ({"mig": "huge"}, "mig", "mig must be a MIG slice profile"),
        ({"capacity": -1}, "capacity", "capacity must be a whole number from 0"),
    ],
)
def test_bad_reservations_name_the_field_and_write_nothing(ledger, changes, field, message):
    args = {"group": "ml101", "gpus": 2, "start": at(ledger, 10), "end": at(ledger, 70),
            "capacity": 4, "mig": None} | changes
    with pytest.raises(ReservationError, match=message) as info:
        reserve(ledger, args.pop("group"), args.pop("gpus"), args.pop("start"),
                args.pop("end"), **args)
    assert info.value.field == field
    assert list_reservations(ledger, include_past=True) == [] and ledger.audit() == []


def test_list_and_cancel(ledger):
    r = reserve(ledger, "ml101", 4, at(ledger, -1), at(ledger, 60), capacity=4, actor="op")
    assert denied(ledger, "rita", 1).reason == "reserved"
    [listed] = list_reservations(ledger, group="ml101")
    assert listed.to_json()["group"] == "ml101" and listed.to_json()["gpus"] == 4
    assert list_reservations(ledger, group="other") == []
    cancelled = cancel(ledger, r.id, actor="op")
    assert cancelled.cancelled_at is not None
    assert cancel(ledger, r.id).cancelled_at == cancelled.cancelled_at  # idempotent
    actions = [e.action for e in ledger.audit()]
    assert actions.count("reservation_cancelled") == 1 and "reservation_added" in actions
    assert list_reservations(ledger) == []
    assert [x.id for x in list_reservations(ledger, include_past=True)] == [r.id]
    assert isinstance(admit(ledger, "rita", 4), Grant)
    with pytest.raises(UnknownReservation, match="no reservation 999"):
        cancel(ledger, 999)


def test_mig_slices_are_reserved_by_size(ledger):
    slices = [f"MIG-{i:08x}-0000-4000-8000-000000000000" for i in range(3)]
    reserve(ledger, "ml101", 2, at(ledger, -1), at(ledger, 60), capacity=3, mig="1g.10gb")
    e = denied(ledger, "rita", 2, devices=slices, mig="1g.10gb")
    assert "2 1g.10gb slices for workshop 'ml101'" in str(e)
    assert "Only 1 of the 3 free 1g.10gb slices" in str(e)
    assert len(admit(ledger, "rita", 4).device_uuids) == 4  # whole GPUs: not reserved
    assert admit(ledger, "sam", 1, groups=["ml101"], devices=slices, mig="1g.10gb")


def test_backup_and_restore_keep_reservations_and_draws(ledger, tmp_path):
    r = reserve(ledger, "ml101", 2, at(ledger, -1), at(ledger, 60), capacity=4)
    admit(ledger, "sam", 1, groups=["ml101"])
    counts = ledger.backup(tmp_path / "b.json")
    assert counts["reservations"] == 1 and counts["reservation_draws"] == 1
    assert ledger.restore(tmp_path / "b.json", replace=True) == counts
    assert list_reservations(ledger)[0].id == r.id and list_reservations(ledger)[0].in_use == 1
    assert ledger.verify() == []


@pytest.mark.timeout(120)
def test_concurrent_admissions_never_exceed_capacity_with_a_reservation(ledger_url):
    """60 simultaneous requests of 1 GPU (45 researchers, 15 students of 'ml101') on
    8 GPUs with 3 reserved, through 4 Ledger objects: exactly 5 researchers and 3
    students get one, each device once."""
    ledgers = [Ledger(ledger_url, pool_size=16, busy_timeout=60) for _ in range(4)]
    try:
        reserve(ledgers[0], "ml101", 3, at(ledgers[0], -1), at(ledgers[0], 60), capacity=8)
        n = 60
        barrier = threading.Barrier(n)

        def one(i: int):
            student = i % 4 == 0
            barrier.wait(timeout=60)
            try:
                return student, ledgers[i % 4].admit(
                    user=f"u{i}",
                    server="",
                    gpus=1,
                    policy=Policy(),
                    devices=DEVICES,
                    groups=["ml101"] if student else [],
                )
            except QuotaDenied as e:
                return student, e

        with ThreadPoolExecutor(max_workers=n) as pool:
            outcomes = list(pool.map(one, range(n)))
        grants = Counter(s for s, o in outcomes if isinstance(o, Grant))
        assert grants == {True: 3, False: 5}
        handed = [u for _, o in outcomes if isinstance(o, Grant) for u in o.device_uuids]
        assert sorted(handed) == sorted(DEVICES)
        reasons = Counter((s, o.reason) for s, o in outcomes if isinstance(o, QuotaDenied))
        # Once all 8 are leased, everyone hears "capacity" first.
        allowed = {(True, "reservation_full"), (False, "reserved"), (True, "capacity"),
                   (False, "capacity")}
        assert set(reasons) <= allowed
        with ledgers[0].engine.connect() as conn:
            assert len(conn.execute(select(reservation_draws)).all()) == 3
        assert ledgers[0].verify() == []
    finally:
        for one_ledger in ledgers:
            one_ledger.close()


def test_the_cli_reserves_lists_and_cancels(sqlite_ledger, sqlite_url, capsys):
    from gpulab.cli import main

    start, end = at(sqlite_ledger, 60), at(sqlite_ledger, 120)
    args = ["quota", "reserve", "ml101", "--gpus", "2", "--from", start, "--until", end,
            "--capacity", "3", "--ledger-url", sqlite_url]
    assert main(args) == 0
    assert "reservation 1: 2 GPUs for group 'ml101' from " in capsys.readouterr().out
    args[2] = "dl201"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpulab quota reserve: 2 GPUs for 'dl201'")
    assert "overlap reservation 1 (2 GPUs for 'ml101'" in err
    assert "together 4, but the node has 3 GPUs" in err
    assert main(["quota", "reservations", "--ledger", sqlite_url]) == 0
    assert "ml101" in capsys.readouterr().out
    assert main(["quota", "unreserve", "1", "--ledger", sqlite_url]) == 0
    assert main(["quota", "unreserve", "7", "--ledger", sqlite_url]) == 2
    assert "gpulab quota unreserve: no reservation 7" in capsys.readouterr().err
    assert list_reservations(sqlite_ledger) == []
