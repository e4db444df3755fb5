"""release(), accrue(), usage() and the GPU-hour budget, with time moved by ``backdate``."""

from __future__ import annotations

import pytest

from gpulab.quota.ledger import QuotaDenied
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES, backdate, snapshot

# Real time passes between the backdate and the next read; never more than this in a test.
SLACK = 30.0


def admit(ledger, user="ada", server="", gpus=1, policy=None):
    policy = Policy() if policy is None else policy
    return ledger.admit(user=user, server=server, gpus=gpus, policy=policy, devices=DEVICES)


def test_release_closes_accrues_frees_and_is_idempotent(ledger):
    grant = admit(ledger, gpus=2)
    backdate(ledger, grant.allocation_id, 100)
    closed = ledger.release(grant.allocation_id, reason="stopped", actor="hub")
    assert closed.ended_at is not None and closed.end_reason == "stopped"
    assert closed.ended_at == closed.last_accrued_at
    assert 200 <= closed.gpu_seconds < 200 + 2 * SLACK
    assert closed.gpu_seconds == pytest.approx(
        2 * (closed.ended_at - closed.granted_at).total_seconds()
    )
    assert ledger.open_allocations() == [] and ledger.find_open("ada", "") is None
    event = ledger.audit()[0]
    assert (event.action, event.reason, event.actor) == ("released", "stopped", "hub")
    assert event.allocation_id == grant.allocation_id and event.at == closed.ended_at

    before = snapshot(ledger)
    again = ledger.release(grant.allocation_id, reason="exited")
    assert again == closed  # same row, first reason kept
    assert snapshot(ledger) == before  # no second event, no change
    assert admit(ledger, user="bob", gpus=8).device_uuids == DEVICES  # devices were freed
    assert ledger.verify() == []


@pytest.mark.parametrize(("reason", "action"), [("idle", "culled"), ("budget", "culled")])
def test_enforcement_releases_are_audited_as_culled(ledger, reason, action):
    grant = admit(ledger)
    ledger.release(grant.allocation_id, reason=reason, actor="gpulab-accountant")
    assert (ledger.audit()[0].action, ledger.audit()[0].reason) == (action, reason)


def test_release_of_an_unknown_allocation_is_a_key_error(ledger):
    before = snapshot(ledger)
    with pytest.raises(KeyError, match="no allocation 42"):
        ledger.release(42, reason="stopped")
    assert snapshot(ledger) == before


def test_accrue_adds_gpu_seconds_by_the_db_clock_and_energy(ledger):
    two = admit(ledger, gpus=2)
    cpu = admit(ledger, server="cpu", gpus=0)
    backdate(ledger, two.allocation_id, 100)
    backdate(ledger, cpu.allocation_id, 100)
    accrued = {a.id: a for a in ledger.accrue({two.allocation_id: 50.0, 999: 7.0})}
    first = accrued[two.allocation_id]
    assert 200 <= first.gpu_seconds < 200 + 2 * SLACK
    assert first.energy_joules == 50.0
    assert first.gpu_seconds == pytest.approx(
        2 * (first.last_accrued_at - first.granted_at).total_seconds()
    )
    assert accrued[cpu.allocation_id].gpu_seconds == 0.0

    backdate(ledger, two.allocation_id, 10)  # 10 s more since the last accrual
    second = {a.id: a for a in ledger.accrue({two.allocation_id: 25})}[two.allocation_id]
    assert second.energy_joules == 75.0
    gained = second.gpu_seconds - first.gpu_seconds
    assert 20 <= gained < 20 + 2 * SLACK
    assert second.gpu_seconds == pytest.approx(
        2 * (second.last_accrued_at - second.granted_at).total_seconds()
    )

    closed = ledger.release(two.allocation_id, reason="stopped", energy_joules=5)
    assert closed.energy_joules == 80.0
    ledger.accrue({two.allocation_id: 20.0})  # a late energy reading for a closed allocation
    after = ledger.allocation(two.allocation_id)
    assert after.gpu_seconds == closed.gpu_seconds and after.energy_joules == 100.0


@pytest.mark.parametrize("energy", [-1.0, float("nan"), float("inf"), "5", True])
def test_accrue_refuses_bad_energy_and_changes_nothing(ledger, energy):
    grant = admit(ledger)
    before = snapshot(ledger)
    with pytest.raises(ValueError, match="energy"):
        ledger.accrue({grant.allocation_id: energy})
    assert snapshot(ledger) == before


def test_usage_counts_running_and_closed_allocations_pro_rata_in_the_window(ledger):
    old = admit(ledger, server="old", gpus=2)
    backdate(ledger, old.allocation_id, 100)
    ledger.release(old.allocation_id, reason="stopped", energy_joules=1000)
    backdate(ledger, old.allocation_id, 1000)  # ran for ~100 s, ~1100 to ~1000 s ago
    running = admit(ledger, server="now", gpus=1)
    backdate(ledger, running.allocation_id, 30)  # running for 30 s, never accrued
    admit(ledger, user="bob", gpus=4)  # someone else's

    everything = ledger.usage("ada", since_seconds_ago=3600)
    assert 230 <= everything.gpu_seconds < 230 + 3 * SLACK
    assert everything.energy_joules == 1000
    assert everything.open_gpus == 1

    half = ledger.usage("ada", since_seconds_ago=1050)  # half of the old one's run
    assert 30 + 100 - 2 * SLACK < half.gpu_seconds < 30 + 100 + 3 * SLACK
    assert 500 - 10 * SLACK < half.energy_joules < 500 + 10 * SLACK

    recent = ledger.usage("ada", since_seconds_ago=600)
    assert 30 <= recent.gpu_seconds < 30 + SLACK
    assert recent.energy_joules == 0
    assert ledger.usage("nobody", 3600) == type(recent)(0.0, 0.0, 0)


def test_budget_counts_running_time_and_denies_when_used_up(ledger):
    policy = Policy(gpu_hours=1.0, window_seconds=7 * 24 * 3600)
    a = admit(ledger, server="a", gpus=1, policy=policy)
    backdate(ledger, a.allocation_id, 1800)
    b = admit(ledger, server="b", gpus=2, policy=policy)  # ~1800 of 3600 GPU-s used: fine
    backdate(ledger, b.allocation_id, 1000)  # now ~1800 + 2 * 1000 = 3800 used
    with pytest.raises(QuotaDenied) as info:
        admit(ledger, server="c", gpus=1, policy=policy)
    e = info.value
    assert (e.reason, e.status_code) == ("budget", 403)
    assert str(e).startswith("your GPU-hour budget is used up: 1.0")
    assert str(e).endswith(" of 1 GPU-hours in the last 7 days")
    assert 3800 <= e.detail["used_gpu_seconds"] < 3800 + 3 * SLACK
    assert ledger.audit()[0].reason == "budget"
    # A CPU server needs no GPU-hours.
    assert admit(ledger, server="cpu", gpus=0, policy=policy).device_uuids == ()


def test_budget_renews_as_use_leaves_the_rolling_window(ledger):
    policy = Policy(gpu_hours=0.5, window_seconds=7200)
    grant = admit(ledger, gpus=1, policy=policy)
    backdate(ledger, grant.allocation_id, 3600)
    ledger.release(grant.allocation_id, reason="stopped")
    with pytest.raises(QuotaDenied, match="budget is used up: 1.00 of 0.5 GPU-hours in the last"):
        admit(ledger, server="x", policy=policy)
    backdate(ledger, grant.allocation_id, 5300)  # ran ~8900 to ~5300 s ago: ~1900 s in window
    with pytest.raises(QuotaDenied, match="budget"):
        admit(ledger, server="x", policy=policy)
    backdate(ledger, grant.allocation_id, 200)  # ~1700 s in the window: under 1800
    assert admit(ledger, server="x", policy=policy).device_uuids == (DEVICES[0],)


def test_zero_budget_allows_no_gpu_time(ledger):
    with pytest.raises(QuotaDenied, match="0.00 of 0 GPU-hours in the last 1 hour"):
        admit(ledger, policy=Policy(gpu_hours=0, window_seconds=3600))


def test_record_event_and_audit_queries(ledger):
    admit(ledger)
    admit(ledger, user="bob")
    event = ledger.record_event(
        "limit_changed", user="bob", actor="admin", reason="raised", detail={"max_gpus": 4}
    )
    assert event.action == "limit_changed" and event.detail == {"max_gpus": 4}
    assert [e.action for e in ledger.audit(user="bob")] == ["limit_changed", "granted"]
    assert [e.user for e in ledger.audit(action="granted")] == ["bob", "ada"]
    assert len(ledger.audit(limit=1)) == 1
    assert ledger.audit(since_id=event.id - 1) == [event]
    with pytest.raises(ValueError, match="action must be one of"):
        ledger.record_event("deleted_everything")


def test_operator_queries(ledger):
    policy = Policy(max_gpus=1)
    a = admit(ledger, gpus=1, policy=policy)
    with pytest.raises(QuotaDenied):
        admit(ledger, server="x", policy=policy)
    b = admit(ledger, user="bob", gpus=2)
    backdate(ledger, b.allocation_id, 50)
    ledger.release(b.allocation_id, reason="stopped", energy_joules=9)
    backdate(ledger, b.allocation_id, 1000)
    assert ledger.decision_counts() == {("granted", None): 2, ("denied", "max_gpus"): 1}
    totals = ledger.totals_by_user()
    assert totals["ada"] == (0.0, 0.0)
    assert 100 <= totals["bob"][0] < 100 + 2 * SLACK and totals["bob"][1] == 9
    assert [x.id for x in ledger.allocations_since(3600)] == [a.allocation_id, b.allocation_id]
    assert [x.id for x in ledger.allocations_since(600)] == [a.allocation_id]
