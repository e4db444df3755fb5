"""backup() / restore(): a JSON file that round-trips all three tables, across backends too."""

from __future__ import annotations

import json

import pytest

from gpulab.quota.ledger import Ledger
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES, backdate, snapshot


def fill(ledger: Ledger) -> None:
    """Open and closed allocations, a denial, energy, an operator event."""
    policy = Policy(max_gpus=2)
    a = ledger.admit(user="ada", server="", gpus=2, policy=policy, devices=DEVICES)
    b = ledger.admit(user="bob", server="lab", gpus=1, policy=policy, devices=DEVICES)
    ledger.admit(user="cy", server="", gpus=0, policy=policy, devices=DEVICES)
    with pytest.raises(Exception, match="you hold 2 of your 2 GPUs"):
        ledger.admit(user="ada", server="x", gpus=1, policy=policy, devices=DEVICES)
    backdate(ledger, a.allocation_id, 123.456789)
    ledger.accrue({a.allocation_id: 1.5, b.allocation_id: 2.25})
    ledger.release(b.allocation_id, reason="idle", actor="culler")
    ledger.record_event("limit_changed", user="ada", actor="admin", detail={"max_gpus": 3})


def test_round_trip_keeps_every_row(ledger, tmp_path):
    fill(ledger)
    counts = ledger.backup(tmp_path / "ledger.json")
    assert counts == {"allocations": 3, "device_leases": 2, "audit_events": 6}
    document = json.loads((tmp_path / "ledger.json").read_text())
    assert (document["format"], document["version"]) == ("gpulab-ledger", 1)

    with Ledger(f"sqlite:///{tmp_path}/restored.sqlite") as restored:
        assert restored.restore(tmp_path / "ledger.json") == counts
        assert snapshot(restored) == snapshot(ledger)
        assert restored.verify() == []
        restored.backup(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["tables"] == document["tables"]


def test_restore_into_postgres_continues_ids_and_leases(sqlite_ledger, postgres_ledger, tmp_path):
    fill(sqlite_ledger)
    sqlite_ledger.backup(tmp_path / "ledger.json")
    postgres_ledger.restore(tmp_path / "ledger.json")
    assert snapshot(postgres_ledger) == snapshot(sqlite_ledger)
    for ledger in (sqlite_ledger, postgres_ledger):  # both go on the same way
        grant = ledger.admit(user="dee", server="", gpus=6, policy=Policy(), devices=DEVICES)
        assert grant.allocation_id == 4 and grant.device_uuids == DEVICES[2:]
        assert ledger.audit(limit=1)[0].id == 7


def test_restore_refuses_a_non_empty_ledger_unless_replace(ledger, tmp_path):
    fill(ledger)
    ledger.backup(tmp_path / "ledger.json")
    before = snapshot(ledger)
    ledger.admit(user="eve", server="", gpus=1, policy=Policy(), devices=DEVICES)
    with pytest.raises(ValueError, match="not empty"):
        ledger.restore(tmp_path / "ledger.json")
    assert ledger.restore(tmp_path / "ledger.json", replace=True)["allocations"] == 3
    assert snapshot(ledger) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": "something"}, "not a gpulab ledger backup"),
        ({"format": "gpulab-ledger", "version": 99}, "unsupported backup version"),
        (
            {
                "format": "gpulab-ledger",
                "version": 1,
                "tables": {
                    "allocations": [{"id": 1, "sneaky": 1}],
                    "device_leases": [],
                    "audit_events": [],
                },
            },
            "unknown columns",
        ),
    ],
)
def test_restore_refuses_bad_files_and_changes_nothing(ledger, tmp_path, content, message):
    fill(ledger)
    before = snapshot(ledger)
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        ledger.restore(tmp_path / "bad.json", replace=True)
    assert snapshot(ledger) == before
