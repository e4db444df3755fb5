"""The spawn form's profiles during class-time reservations (``profiles.with_reservations``)
on a real ledger: outside the workshop, profiles only reserved GPUs could satisfy are greyed
with the workshop and the time; a member sees what the reservation offers; and the form
agrees with what ``Ledger.admit`` then decides, profile by profile."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpulab.quota.ledger import QuotaDenied
from gpulab.quota.policy import Policy
from gpulab.quota.profiles import Capacity, build_profiles, render_form, with_reservations
from gpulab.quota.reservations import cancel, clock, reserve
from tests.quota.conftest import DEVICES

NODE = DEVICES[:4]
HOUR = 3600.0


def at(ledger, minutes):
    return (ledger.db_now() + timedelta(minutes=minutes)).isoformat()


def form(ledger, user, groups=(), policy=None):
    """``user``'s profiles as the spawner builds them: capacity from the ledger's leases."""
    policy = policy or Policy()
    leased = {u for a in ledger.open_allocations() for u in a.device_uuids}
    held = sum(len(a.device_uuids) for a in ledger.open_allocations() if a.user == user)
    capacity = Capacity(total_gpus=len(NODE), free_gpus=len(set(NODE) - leased),
                        held_gpus=held, budget_left_seconds=None)
    profiles = with_reservations(build_profiles(policy, capacity), ledger, capacity,
                                 policy=policy, groups=groups)
    return {p.name: p for p in profiles}


def admits(ledger, user, gpus, groups=(), policy=None):
    """Whether the ledger grants it (and gives it back at once)."""
    try:
        grant = ledger.admit(user=user, server="probe", gpus=gpus, policy=policy or Policy(),
                             devices=NODE, groups=groups)
    except QuotaDenied:
        return False
    ledger.release(grant.allocation_id, reason="stopped")
    return True


@pytest.fixture
def ledger(sqlite_ledger):
    return sqlite_ledger


def test_outside_the_group_profiles_needing_reserved_gpus_are_greyed(ledger):
    r = reserve(ledger, "ml101", 2, at(ledger, -1), at(ledger, 60), capacity=4)
    until = clock(r.ends_at, ledger.db_now())
    profiles = form(ledger, "rita")
    assert {n: p.available for n, p in profiles.items()} == {
        "cpu": True, "1-gpu": True, "2-gpus": True, "4-gpus": False}
    assert profiles["4-gpus"].reason == f"reserved for workshop ml101 until {until}"
    assert profiles["2-gpus"].note == ""
    html = render_form(list(profiles.values()))
    assert f"(reserved for workshop ml101 until {until})" in html
    assert 'value="4-gpus" disabled' in html
    # The form says what the ledger then decides.
    for p in profiles.values():
        assert admits(ledger, "rita", p.gpus) == p.available, p.name

    # Once rita holds 2, the other 2 free GPUs are the reserved ones: 1-gpu greyed too.
    held = ledger.admit(user="rita", server="", gpus=2, policy=Policy(), devices=NODE)
    profiles = form(ledger, "rita")
    assert profiles["1-gpu"].reason == f"reserved for workshop ml101 until {until}"
    ledger.release(held.allocation_id, reason="stopped")

    # Cancelled: nothing is held back any more.
    cancel(ledger, r.id)
    assert all(p.available and not p.note for p in form(ledger, "rita").values())


def test_a_member_sees_what_the_reservation_offers(ledger):
    r = reserve(ledger, "ml101", 2, at(ledger, -1), at(ledger, 60), capacity=4)
    until = clock(r.ends_at, ledger.db_now())
    profiles = form(ledger, "sam", groups=["other", "ml101"])
    assert profiles["1-gpu"].available and profiles["2-gpus"].available
    assert profiles["2-gpus"].note == f"from workshop ml101's reservation of 2 GPUs, until {until}"
    assert not profiles["4-gpus"].available  # members use only the reservation
    assert profiles["4-gpus"].reason == (
        f"your workshop ml101 has 2 GPUs reserved until {until}; 0 in use")
    for p in profiles.values():
        assert admits(ledger, "sam", p.gpus, groups=["ml101"]) == p.available, p.name

    # A classmate holds one: one seat left.
    classmate = ledger.admit(user="sue", server="", gpus=1, policy=Policy(), devices=NODE,
                             groups=["ml101"])
    profiles = form(ledger, "sam", groups=["ml101"])
    assert profiles["1-gpu"].available
    assert profiles["2-gpus"].reason == (
        f"your workshop ml101 has 2 GPUs reserved until {until}; 1 in use")
    ledger.release(classmate.allocation_id, reason="stopped")


def test_an_upcoming_reservation_greys_only_sessions_that_would_reach_it(ledger):
    r = reserve(ledger, "ml101", 3, at(ledger, 180), at(ledger, 240), capacity=4)
    now = ledger.db_now()
    short = Policy(max_session_seconds=HOUR)  # ends before the class: everything
    assert all(p.available for p in form(ledger, "rita", policy=short).values())
    unlimited = form(ledger, "rita")  # no session limit: would still run at the class
    assert unlimited["1-gpu"].available and not unlimited["2-gpus"].available
    assert unlimited["2-gpus"].reason == (
        f"reserved for workshop ml101 from {clock(r.starts_at, now)} "
        f"until {clock(r.ends_at, now)}")
    for policy in (short, Policy()):
        for p in form(ledger, "rita", policy=policy).values():
            assert admits(ledger, "rita", p.gpus, policy=policy) == p.available, p.name
