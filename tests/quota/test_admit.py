"""admit(): the checks in order, their user-facing messages, and what each leaves in the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from gpulab.quota.ledger import Grant, QuotaDenied
from gpulab.quota.models import device_leases
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES, snapshot


def admit(ledger, user="ada", server="", gpus=1, policy=None, devices=DEVICES, **kw):
    policy = Policy() if policy is None else policy
    return ledger.admit(user=user, server=server, gpus=gpus, policy=policy, devices=devices, **kw)


def test_grant_records_allocation_leases_and_audit_together(ledger):
    grant = admit(ledger, gpus=2, actor="hub")
    assert isinstance(grant, Grant)
    assert grant.device_uuids == DEVICES[:2]
    assert (grant.user, grant.server) == ("ada", "")
    assert grant.granted_at.tzinfo == UTC
    [allocation] = ledger.open_allocations()
    assert allocation.id == grant.allocation_id
    assert allocation.device_uuids == DEVICES[:2] and allocation.gpus == 2
    assert allocation.granted_at == grant.granted_at == allocation.last_accrued_at
    assert ledger.find_open("ada", "") == allocation
    assert ledger.find_open("ada", "other") is None
    [event] = ledger.audit()
    assert (event.action, event.user, event.actor) == ("granted", "ada", "hub")
    assert event.allocation_id == grant.allocation_id
    assert event.detail["devices"] == list(DEVICES[:2])
    assert event.at == grant.granted_at
    assert ledger.verify() == []


def test_timestamps_come_from_the_database_clock_in_utc(ledger):
    # The PostgreSQL test server runs in Asia/Kolkata (UTC+5:30): leaked local time would
    # show as a 5.5 h offset here.
    before = datetime.now(UTC)
    grant = admit(ledger)
    assert abs((grant.granted_at - before).total_seconds()) < 60
    assert abs((ledger.db_now() - datetime.now(UTC)).total_seconds()) < 60
    assert ledger.db_now() >= grant.granted_at


def test_devices_are_handed_out_in_inventory_order_and_never_twice(ledger):
    grants = [admit(ledger, user=f"u{i}", gpus=3 if i < 2 else 1) for i in range(3)]
    assert [g.device_uuids for g in grants] == [DEVICES[0:3], DEVICES[3:6], DEVICES[6:7]]
    ledger.release(grants[0].allocation_id, reason="stopped")
    assert admit(ledger, user="u9", gpus=4).device_uuids == (*DEVICES[0:3], DEVICES[7])


def test_cpu_server_is_granted_and_recorded_without_devices(ledger):
    admit(ledger, user="x", gpus=8)  # every GPU taken
    grant = admit(ledger, gpus=0, policy=Policy(max_gpus=0, gpu_hours=0))
    assert grant.device_uuids == ()
    allocation = ledger.find_open("ada", "")
    assert allocation.gpus == 0 and allocation.device_uuids == ()
    assert ledger.audit(user="ada")[0].action == "granted"
    assert ledger.verify() == []


@pytest.mark.parametrize(
    ("held", "requested", "max_gpus", "message"),
    [
        (1, 2, 2, "you hold 1 of your 2 GPUs; this request for 2 would exceed it"),
        (0, 3, 2, "you hold 0 of your 2 GPUs; this request for 3 would exceed it"),
        (0, 1, 0, "you hold 0 of your 0 GPUs; this request for 1 would exceed it"),
        (2, 1, 2, "you hold 2 of your 2 GPUs; this request for 1 would exceed it"),
    ],
)
def test_max_gpus_counts_open_allocations_over_all_servers(
    ledger, held, requested, max_gpus, message
):
    policy = Policy(max_gpus=max_gpus)
    for i in range(held):
        admit(ledger, server=f"s{i}", policy=policy)
    with pytest.raises(QuotaDenied) as info:
        admit(ledger, server="new", gpus=requested, policy=policy, actor="ada")
    e = info.value
    assert (str(e), e.reason, e.status_code) == (message, "max_gpus", 403)
    assert e.detail["held"] == held and e.detail["max_gpus"] == max_gpus
    event = ledger.audit()[0]
    assert (event.action, event.reason, event.actor) == ("denied", "max_gpus", "ada")
    assert event.detail["message"] == message and event.allocation_id is None
    assert len(ledger.open_allocations()) == held


def test_max_gpus_frees_up_after_release(ledger):
    policy = Policy(max_gpus=1)
    grant = admit(ledger, server="a", policy=policy)
    with pytest.raises(QuotaDenied, match="you hold 1 of your 1 GPU;"):
        admit(ledger, server="b", policy=policy)
    admit(ledger, user="bob", server="a", policy=policy)  # limits are per user
    ledger.release(grant.allocation_id, reason="stopped")
    assert admit(ledger, server="b", policy=policy).device_uuids == (DEVICES[0],)


@pytest.mark.parametrize(
    ("taken", "requested", "devices", "message"),
    [
        (8, 1, DEVICES, "all 8 GPUs are in use"),
        (7, 2, DEVICES, "only 1 of 8 GPUs is free; this request needs 2"),
        (5, 4, DEVICES, "only 3 of 8 GPUs are free; this request needs 4"),
        (0, 9, DEVICES, "this node has 8 GPUs; a request for 9 can never be granted here"),
        (0, 1, (), "this node has no GPUs"),
        (1, 1, DEVICES[:1], "the node's only GPU is in use"),
    ],
)
def test_capacity_denials_say_what_is_free(ledger, taken, requested, devices, message):
    for i in range(taken):
        admit(ledger, user=f"other{i}", devices=devices)
    with pytest.raises(QuotaDenied) as info:
        admit(ledger, gpus=requested, devices=devices)
    assert (str(info.value), info.value.reason, info.value.status_code) == (
        message,
        "capacity",
        409,
    )
    assert ledger.audit()[0].reason == "capacity"
    assert ledger.find_open("ada", "") is None


def test_check_order_max_gpus_before_capacity(ledger):
    admit(ledger, user="other", gpus=8)
    with pytest.raises(QuotaDenied) as info:
        admit(ledger, gpus=2, policy=Policy(max_gpus=1))
    assert info.value.reason == "max_gpus"


def test_one_open_allocation_per_server(ledger):
    first = admit(ledger, server="lab")
    with pytest.raises(QuotaDenied) as info:
        admit(ledger, server="lab", gpus=0)
    assert info.value.reason == "open_allocation" and info.value.status_code == 409
    assert str(info.value) == (
        f"server 'lab' already holds allocation {first.allocation_id} (1 GPU); "
        "stop it before starting it again"
    )
    ledger.release(first.allocation_id, reason="stopped")
    assert admit(ledger, server="lab").allocation_id != first.allocation_id


def test_devices_in_use_elsewhere_but_not_in_this_inventory_are_ignored(ledger):
    admit(ledger, user="other", devices=["GPU-elsewhere"])
    assert admit(ledger, gpus=8).device_uuids == DEVICES


BAD_GPUS = [-1, "two", 1.5, True, None, "1", [1]]


@pytest.mark.parametrize("gpus", BAD_GPUS, ids=repr)
def test_bad_gpus_raise_value_error_and_change_nothing(ledger, gpus):
    admit(ledger, user="someone")
    with pytest.raises(QuotaDenied):
        admit(ledger, user="someone", server="x", gpus=1, policy=Policy(max_gpus=1))
    before = snapshot(ledger)
    with pytest.raises(ValueError, match=r"^gpus must be a whole number of GPUs.*not "):
        admit(ledger, gpus=gpus)
    assert snapshot(ledger) == before
    assert sum(len(rows) for rows in before.values()) == 4  # allocation, lease, 2 events


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user": ""}, "user"),
        ({"user": None}, "user"),
        ({"server": 3}, "server"),
        ({"devices": "GPU-0"}, "devices"),
        ({"devices": [None]}, "devices"),
        ({"user": "x" * 256}, "user"),
    ],
)
def test_other_bad_arguments_name_their_field_and_change_nothing(ledger, kwargs, field):
    before = snapshot(ledger)
    with pytest.raises(ValueError, match=field):
        admit(ledger, **kwargs)
    assert snapshot(ledger) == before


def test_the_database_refuses_a_second_lease_of_one_device(ledger):
    """The guarantee is a primary key, not only the Python check."""
    grant = admit(ledger)
    with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
        conn.execute(
            insert(device_leases).values(device_uuid=DEVICES[0], allocation_id=grant.allocation_id)
        )
    assert ledger.verify() == []


def test_the_audit_log_refuses_updates(ledger):
    admit(ledger)
    with pytest.raises(Exception, match="append-only"), ledger.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET action = 'released'"))
    assert ledger.audit()[0].action == "granted"
