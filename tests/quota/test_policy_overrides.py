"""Operator policy overrides in the ledger: set, replace, remove, audited, validated before
anything is written; and their resolution over the config file's policies (they win, field
by field, at their level). Both backends through the ``ledger`` fixture."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from gpulab.quota.ledger import Ledger
from gpulab.quota.models import policy_overrides
from gpulab.quota.policy import Policy, PolicyError, PolicySet
from tests.quota.conftest import snapshot


def overrides_rows(ledger: Ledger) -> list[tuple]:
    with ledger.engine.connect() as conn:
        query = select(policy_overrides).order_by(policy_overrides.c.level, policy_overrides.c.name)
        return [tuple(row) for row in conn.execute(query)]


def state(ledger: Ledger):
    return snapshot(ledger), overrides_rows(ledger)


def test_set_replace_and_remove_an_override_each_audited(ledger):
    ledger.set_policy("group", "physics", {"max_gpus": 2, "window": "1d"}, actor="ops")
    assert ledger.policy_overrides() == {
        "defaults": {},
        "groups": {"physics": {"max_gpus": 2, "window": 86400.0}},
        "users": {},
    }
    ((level, name, config, changed_at, changed_by),) = overrides_rows(ledger)
    assert (level, name, config, changed_by) == ("group", "physics", config, "ops")
    assert changed_at.tzinfo is not None

    # Replacing: the new config is the whole override (window is gone).
    ledger.set_policy("group", "physics", {"gpu_hours": 10}, actor="root")
    assert ledger.policy_overrides()["groups"] == {"physics": {"gpu_hours": 10.0}}
    assert overrides_rows(ledger)[0][4] == "root"

    ledger.set_policy("group", "physics", {}, actor="ops")
    assert ledger.policy_overrides() == {"defaults": {}, "groups": {}, "users": {}}
    assert overrides_rows(ledger) == []

    events = ledger.audit(action="limit_changed")[::-1]  # oldest first
    assert [(e.actor, e.reason, e.user) for e in events] == [
        ("ops", "override_set", None),
        ("root", "override_set", None),
        ("ops", "override_removed", None),
    ]
    assert [e.detail for e in events] == [
        {"level": "group", "name": "physics", "old": None, "new": {"max_gpus": 2, "window": 86400}},
        {
            "level": "group",
            "name": "physics",
            "old": {"max_gpus": 2, "window": 86400},
            "new": {"gpu_hours": 10},
        },
        {"level": "group", "name": "physics", "old": {"gpu_hours": 10}, "new": None},
    ]
    assert events[0].at <= events[1].at <= events[2].at


def test_levels_are_kept_apart_and_a_user_override_is_in_the_users_audit(ledger):
    ledger.set_policy("default", "", {"max_gpus": 1}, actor="ops")
    ledger.set_policy("group", "bob", {"max_gpus": 3}, actor="ops")  # a group named like a user
    ledger.set_policy("user", "bob", {"profiles": ["1-gpu", "cpu"], "max_session": "8h"}, actor="o")
    assert ledger.policy_overrides() == {
        "defaults": {"max_gpus": 1},
        "groups": {"bob": {"max_gpus": 3}},
        "users": {"bob": {"profiles": ["1-gpu", "cpu"], "max_session": 28800.0}},
    }
    (event,) = ledger.audit("bob", action="limit_changed")
    assert event.detail["level"] == "user" and event.actor == "o"


def test_setting_the_same_override_again_writes_nothing(ledger):
    ledger.set_policy("user", "ada", {"window": "1d"}, actor="ops")
    before = state(ledger)
    ledger.set_policy("user", "ada", {"window": 86400}, actor="someone-else")  # same, in seconds
    ledger.set_policy("user", "eve", {}, actor="ops")  # removing what isn't there
    assert state(ledger) == before


@pytest.mark.parametrize(
    ("level", "name", "config", "message"),
    [
        ("user", "bob", {"max_gpus": -1}, r"override\.users\['bob'\]\.max_gpus must be a whole"),
        ("user", "bob", {"max_gpus": "two"}, r"override\.users\['bob'\]\.max_gpus must be"),
        ("group", "g", {"gpu_hours": "10"}, r"override\.groups\['g'\]\.gpu_hours must be"),
        ("default", "", {"window": "3 fortnights"}, r"override\.defaults\.window must be"),
        ("default", "", {"window": 0}, r"override\.defaults\.window must be a duration > 0"),
        ("user", "bob", {"profiles": "cpu"}, r"override\.users\['bob'\]\.profiles must be a list"),
        ("user", "bob", {"max_gpu": 1}, r"unknown keys 'max_gpu' \(did you mean 'max_gpus'\?\)"),
        ("user", "bob", None, r"override\.users\['bob'\] must be a dict of limits"),
        ("user", "bob", [1], r"override\.users\['bob'\] must be a dict of limits"),
        ("users", "bob", {"max_gpus": 1}, r"^level must be one of 'default', 'group', 'user'"),
        ("user", "", {"max_gpus": 1}, r"^name must be a non-empty user name"),
        ("group", "  ", {"max_gpus": 1}, r"^name must be a non-empty group name"),
        ("group", "x" * 256, {"max_gpus": 1}, r"^name must be a non-empty group name"),
        ("group", None, {"max_gpus": 1}, r"^name must be"),
        ("default", "physics", {"max_gpus": 1}, r"^name must be '' for the default level"),
    ],
)
def test_bad_values_raise_naming_the_field_and_change_nothing(ledger, level, name, config, message):
    ledger.set_policy("user", "bob", {"max_gpus": 2}, actor="ops")
    before = state(ledger)
    with pytest.raises(PolicyError, match=message):
        ledger.set_policy(level, name, config, actor="ops")
    assert state(ledger) == before
    assert ledger.policy_overrides()["users"] == {"bob": {"max_gpus": 2}}


def test_an_actor_is_required(ledger):
    before = state(ledger)
    with pytest.raises(ValueError, match="actor must be a string"):
        ledger.set_policy("user", "bob", {"max_gpus": 1}, actor="")
    assert state(ledger) == before


def test_another_process_ledger_sees_a_change_at_once(ledger_url):
    with Ledger(ledger_url) as hub, Ledger(ledger_url) as service:
        assert service.policy_overrides()["users"] == {}
        hub.set_policy("user", "bob", {"max_gpus": 0}, actor="ops")
        assert service.policy_overrides()["users"] == {"bob": {"max_gpus": 0}}


def test_overrides_round_trip_through_backup_and_verify_flags_a_broken_one(ledger, tmp_path):
    ledger.set_policy("default", "", {"gpu_hours": 5}, actor="ops")
    ledger.set_policy("user", "bob", {"max_gpus": 1}, actor="ops")
    counts = ledger.backup(tmp_path / "b.json")
    assert counts["policy_overrides"] == 2
    with Ledger(f"sqlite:///{tmp_path}/restored.sqlite") as restored:
        assert restored.restore(tmp_path / "b.json") == counts
        assert state(restored) == state(ledger)
        assert restored.verify() == []
        # Only raw SQL can store an invalid override; verify says which.
        with restored.engine.begin() as conn:
            conn.execute(
                policy_overrides.update()
                .where(policy_overrides.c.name == "bob")
                .values(config={"max_gpus": -3})
            )
        (problem,) = restored.verify()
        assert "policy override ('user', 'bob')" in problem and "max_gpus" in problem


def test_restore_refuses_a_backup_with_an_invalid_override(ledger, tmp_path):
    ledger.set_policy("user", "bob", {"max_gpus": 1}, actor="ops")
    ledger.backup(tmp_path / "b.json")
    document = json.loads((tmp_path / "b.json").read_text())
    document["tables"]["policy_overrides"][0]["config"] = {"max_gpus": "lots"}
    (tmp_path / "bad.json").write_text(json.dumps(document))
    before = state(ledger)
    with pytest.raises(ValueError, match=r"override\.users\['bob'\]\.max_gpus must be"):
        ledger.restore(tmp_path / "bad.json", replace=True)
    assert state(ledger) == before


def test_a_backup_without_overrides_restores_none(ledger, tmp_path):
    ledger.set_policy("user", "bob", {"max_gpus": 1}, actor="ops")
    ledger.backup(tmp_path / "b.json")
    document = json.loads((tmp_path / "b.json").read_text())
    del document["tables"]["policy_overrides"]  # a file from before the table
    (tmp_path / "old.json").write_text(json.dumps(document))
    counts = ledger.restore(tmp_path / "old.json", replace=True)
    assert "policy_overrides" not in counts
    assert ledger.policy_overrides()["users"] == {}


# resolution ---------------------------------------------------------------------------

CONFIG = PolicySet(
    defaults={"max_gpus": 1, "gpu_hours": 100, "window": "7d"},
    groups={"physics": {"max_gpus": 2, "profiles": ["cpu"]}},
    users={"ada": {"max_gpus": 4}},
)


@pytest.mark.parametrize(
    ("overrides", "user", "groups", "expected"),
    [
        # No overrides: the config's answer.
        ({}, "bob", [], Policy(max_gpus=1, gpu_hours=100)),
        # A default override replaces only the fields it sets.
        ({"defaults": {"max_gpus": 3}}, "bob", [], Policy(max_gpus=3, gpu_hours=100)),
        ({"defaults": {"gpu_hours": None}}, "bob", [], Policy(max_gpus=1)),
        # A group override, field by field: profiles from the config survive.
        (
            {"groups": {"physics": {"max_gpus": 0}}},
            "bob",
            ["physics"],
            Policy(max_gpus=0, gpu_hours=100, profiles=frozenset({"cpu"})),
        ),
        # A group only the overrides know.
        (
            {"groups": {"chem": {"max_gpus": 6}}},
            "bob",
            ["physics", "chem"],
            Policy(max_gpus=6, gpu_hours=100, profiles=frozenset({"cpu"})),
        ),
        # Overrides don't change the rule across levels: the user's level still wins...
        (
            {"groups": {"physics": {"max_gpus": 8}}},
            "ada",
            ["physics"],
            Policy(max_gpus=4, gpu_hours=100, profiles=frozenset({"cpu"})),
        ),
        # ...and a user override beats the user's config in both directions.
        (
            {"users": {"ada": {"max_gpus": 0}}},
            "ada",
            ["physics"],
            Policy(max_gpus=0, gpu_hours=100, profiles=frozenset({"cpu"})),
        ),
        (
            {"users": {"ada": {"window": "1d"}}},
            "ada",
            [],
            Policy(max_gpus=4, gpu_hours=100, window_seconds=86400.0),
        ),
    ],
)
def test_resolution_with_overrides(overrides, user, groups, expected):
    assert CONFIG.with_overrides(overrides).resolve(user, groups) == expected
    assert CONFIG.resolve("ada", []).max_gpus == 4  # the config set itself is unchanged


def test_resolution_reads_the_ledgers_overrides(ledger):
    ledger.set_policy("group", "physics", {"max_gpus": 5}, actor="ops")
    ledger.set_policy("user", "bob", {"gpu_hours": 1}, actor="ops")
    merged = CONFIG.with_overrides(ledger.policy_overrides())
    assert merged.resolve("bob", ["physics"]) == Policy(
        max_gpus=5, gpu_hours=1.0, profiles=frozenset({"cpu"})
    )
    assert merged.resolve("cy", []) == Policy(max_gpus=1, gpu_hours=100)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"groups": {"physics": {"max_gpus": -1}}}, r"override\.groups\['physics'\]\.max_gpus"),
        ({"default": {}}, r"override has unknown keys \['default'\]"),
        ("max_gpus=1", r"override must be a dict"),
    ],
)
def test_bad_overrides_name_the_setting(overrides, message):
    with pytest.raises(PolicyError, match=message):
        CONFIG.with_overrides(overrides)
