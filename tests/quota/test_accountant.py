"""The accountant on a real SQLite ledger and a static inventory whose telemetry the test
sets (``StaticInventory.set_telemetry``); time passes through ``backdate``."""

from datetime import timedelta

import pytest

from gpulab.gpus import StaticInventory
from gpulab.quota.accountant import Accountant
from gpulab.quota.policy import Policy
from tests.quota.conftest import backdate

HOUR = 3600.0
NO_LIMITS = Policy()


@pytest.fixture
def inventory():
    return StaticInventory.synthetic(4)


def make(ledger, inventory, policy=NO_LIMITS, **options):
    options.setdefault("reconcile_after_seconds", 60)
    return Accountant(ledger, inventory, lambda user: policy, **options)


def grant(ledger, inventory, user="ana", server="", gpus=1, policy=NO_LIMITS):
    devices = [gpu.uuid for gpu in inventory.devices()]
    return ledger.admit(user=user, server=server, gpus=gpus, policy=policy, devices=devices)


def test_a_running_server_within_its_limits_is_left_alone(sqlite_ledger, inventory):
    g = grant(sqlite_ledger, inventory)
    report = make(sqlite_ledger, inventory).tick({("ana", "")})
    assert (report.stop, report.warned, report.reconciled) == ([], [], [])
    assert sqlite_ledger.allocation(g.allocation_id).is_open


def test_an_allocation_without_a_server_is_reconciled_after_the_delay(sqlite_ledger, inventory):
    g = grant(sqlite_ledger, inventory)
    accountant = make(sqlite_ledger, inventory)
    assert accountant.tick(set()).reconciled == []  # may still be spawning
    backdate(sqlite_ledger, g.allocation_id, 120)
    (closed,) = accountant.tick(set()).reconciled
    assert (closed.id, closed.end_reason) == (g.allocation_id, "reconciled")
    assert sqlite_ledger.open_allocations() == []


def test_budget_warns_then_stops_after_the_grace_period(sqlite_ledger, inventory):
    policy = Policy(gpu_hours=1.0, window_seconds=24 * HOUR)
    g = grant(sqlite_ledger, inventory, policy=policy)
    accountant = make(
        sqlite_ledger, inventory, policy, warn_before_seconds=15 * 60, grace_seconds=10 * 60
    )
    backdate(sqlite_ledger, g.allocation_id, 50 * 60)  # 50 of 60 GPU-minutes used
    report = accountant.tick({("ana", "")})
    (warning,) = report.warned
    assert warning.kind == "budget" and "will be stopped in" in warning.message
    assert report.stop == []
    assert accountant.warnings("ana")[0].deadline == warning.deadline
    assert make(sqlite_ledger, inventory, policy).tick({("ana", "")}).warned == []  # once

    backdate(sqlite_ledger, g.allocation_id, 15 * 60)  # budget gone, grace not over
    assert accountant.tick({("ana", "")}).stop == []
    backdate(sqlite_ledger, g.allocation_id, 10 * 60)  # grace over
    (stopped, reason) = accountant.tick({("ana", "")}).stop[0]
    assert (stopped.id, reason, stopped.end_reason) == (g.allocation_id, "budget", "budget")
    assert sqlite_ledger.audit("ana", limit=1)[0].action == "culled"
    # Until the hub has stopped it, the server stays on the list; then it leaves it.
    assert accountant.tick({("ana", "")}).stop
    assert accountant.tick(set()).stop == []


def test_session_length_is_enforced(sqlite_ledger, inventory):
    policy = Policy(max_session_seconds=2 * HOUR)
    g = grant(sqlite_ledger, inventory, policy=policy)
    accountant = make(sqlite_ledger, inventory, policy, warn_before_seconds=600, grace_seconds=60)
    backdate(sqlite_ledger, g.allocation_id, 2 * HOUR - 300)
    (warning,) = accountant.tick({("ana", "")}).warned
    assert warning.kind == "session_limit" and "2h" in warning.message
    backdate(sqlite_ledger, g.allocation_id, 400)
    assert accountant.tick({("ana", "")}).stop[0][1] == "session_limit"


def test_idle_gpus_are_culled_and_busy_ones_are_reported(sqlite_ledger, inventory):
    g = grant(sqlite_ledger, inventory, gpus=2)
    accountant = make(sqlite_ledger, inventory, gpu_idle_seconds=30 * 60)
    first, second = g.device_uuids
    inventory.set_telemetry(first, utilization_percent=85)
    report = accountant.tick({("ana", "")})
    assert [a.id for a in report.busy] == [g.allocation_id]
    inventory.set_telemetry(first, utilization_percent=0)
    assert accountant.tick({("ana", "")}).stop == []  # idle from now on
    # Idle time is measured on the database clock: move the first idle reading back.
    accountant._idle_since[g.allocation_id] -= timedelta(minutes=31)
    (stopped, reason) = accountant.tick({("ana", "")}).stop[0]
    assert reason == "gpu_idle" and stopped.end_reason == "gpu_idle"


def test_energy_is_charged_to_the_allocation_holding_the_device(sqlite_ledger, inventory):
    g = grant(sqlite_ledger, inventory)
    other = grant(sqlite_ledger, inventory, user="bo")
    (device,) = g.device_uuids
    (other_device,) = other.device_uuids
    accountant = make(sqlite_ledger, inventory)
    inventory.set_telemetry(device, energy_joules=1000.0)
    inventory.set_telemetry(other_device, energy_joules=5.0)
    accountant.tick({("ana", ""), ("bo", "")})  # first readings: nothing to charge yet
    inventory.set_telemetry(device, energy_joules=1250.0)
    accountant.tick({("ana", ""), ("bo", "")})
    assert sqlite_ledger.allocation(g.allocation_id).energy_joules == pytest.approx(250.0)
    assert sqlite_ledger.allocation(other.allocation_id).energy_joules == 0.0
    inventory.set_telemetry(device, energy_joules=10.0)  # counter reset: no negative charge
    accountant.tick({("ana", ""), ("bo", "")})
    assert sqlite_ledger.allocation(g.allocation_id).energy_joules == pytest.approx(250.0)


def test_cpu_servers_are_never_culled_for_gpu_reasons(sqlite_ledger, inventory):
    policy = Policy(gpu_hours=0.0, max_session_seconds=1)
    g = grant(sqlite_ledger, inventory, gpus=0, policy=policy)
    backdate(sqlite_ledger, g.allocation_id, HOUR)
    report = make(sqlite_ledger, inventory, policy, gpu_idle_seconds=1).tick({("ana", "")})
    assert (report.stop, report.warned) == ([], [])
