"""Operator policy overrides through the hub adapter: ``GpulabQuota.policy_for`` applies the
ledger's overrides at once (in every process) and ``GpulabQuota.set_policy`` audits them.
The service's ``GET/PUT api/policies`` runs against a real hub in
tests/e2e/test_quota_service.py.

Fixtures
- ``config``: a traitlets Config for ``GpulabQuota`` (a SQLite ledger in ``tmp_path``, two
  static GPUs, a default, a group and a user policy); the ``GpulabQuota`` singleton is
  cleared after each test.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from traitlets.config import Config

from gpulab.quota.ledger import Ledger
from gpulab.quota.models import audit_events, policy_overrides
from gpulab.quota.policy import Policy, PolicyError
from gpulab_hub.quota import GpulabQuota


@pytest.fixture
def config(tmp_path):
    c = Config()
    c.GpulabQuota.ledger_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    c.GpulabQuota.static_gpus = 2
    c.GpulabQuota.default_policy = {"max_gpus": 1, "gpu_hours": 100, "window": "7d"}
    c.GpulabQuota.group_policies = {"physics": {"max_gpus": 2, "profiles": ["cpu", "1-gpu"]}}
    c.GpulabQuota.user_policies = {"ada": {"max_gpus": 0}}
    yield c
    GpulabQuota.clear_instance()


@pytest.fixture
def quota(config):
    return GpulabQuota.instance(config=config)


def ledger_state(ledger: Ledger):
    with ledger.engine.connect() as conn:
        return [
            [tuple(row) for row in conn.execute(select(table))]
            for table in (policy_overrides, audit_events)
        ]


# GpulabQuota ----------------------------------------------------------------------------


def test_policy_for_applies_overrides_at_once_in_another_process(config, quota, tmp_path):
    assert quota.policy_for("dora", ["physics"]) == Policy(
        max_gpus=2, gpu_hours=100, profiles=frozenset({"cpu", "1-gpu"})
    )
    # The quota service is another process with its own Ledger on the same database.
    with Ledger(config.GpulabQuota.ledger_url) as service_ledger:
        service_ledger.set_policy("group", "physics", {"max_gpus": 0}, actor="ops")
    assert quota.policy_for("dora", ["physics"]).max_gpus == 0  # no restart, no wait
    assert quota.policy_for("dora", ["physics"]).profiles == frozenset({"cpu", "1-gpu"})
    assert quota.policy_for("cy", []).max_gpus == 1

    quota.set_policy("group", "physics", {}, actor="ops")
    assert quota.policy_for("dora", ["physics"]).max_gpus == 2


def test_precedence_config_then_overrides_field_by_field(quota):
    quota.set_policy("default", "", {"gpu_hours": 5, "window": "1d"}, actor="ops")
    quota.set_policy("user", "ada", {"gpu_hours": 50}, actor="ops")
    # ada: the user override's gpu_hours, the user config's max_gpus, the defaults' window.
    assert quota.policy_for("ada", []) == Policy(max_gpus=0, gpu_hours=50.0, window_seconds=86400.0)
    assert quota.policy_for("cy", []) == Policy(max_gpus=1, gpu_hours=5.0, window_seconds=86400.0)


def test_set_policy_returns_the_levels_view_and_is_audited(quota):
    view = quota.set_policy("user", "ada", {"max_gpus": 3, "max_session": "8h"}, actor="ops")
    assert view == {
        "level": "user",
        "name": "ada",
        "config": {"max_gpus": 0},
        "override": {"max_gpus": 3, "max_session": 28800.0},
        "effective": {"max_gpus": 3, "max_session": 28800.0},
    }
    (event,) = quota.ledger.audit("ada", action="limit_changed")
    assert event.actor == "ops"
    assert event.detail == {
        "level": "user",
        "name": "ada",
        "old": None,
        "new": {"max_gpus": 3, "max_session": 28800.0},
    }
    everything = quota.policies_view()
    assert everything["config"]["users"] == {"ada": {"max_gpus": 0}}
    assert everything["overrides"]["users"] == {"ada": {"max_gpus": 3, "max_session": 28800.0}}
    assert everything["effective"]["groups"]["physics"] == {
        "max_gpus": 2,
        "profiles": ["1-gpu", "cpu"],
    }


@pytest.mark.parametrize(
    ("level", "name", "body", "message"),
    [
        ("group", "physics", {"max_gpus": -1}, r"override\.groups\['physics'\]\.max_gpus"),
        ("group", "", {"max_gpus": 1}, r"^name must be a non-empty group name"),
        ("group", "g" * 256, {"max_gpus": 1}, r"^name must be a non-empty group name"),
        ("user", "ada", {"windw": "1d"}, r"did you mean 'window'"),
    ],
)
def test_bad_set_policy_changes_nothing(quota, level, name, body, message):
    before = ledger_state(quota.ledger)
    with pytest.raises(PolicyError, match=message):
        quota.set_policy(level, name, body, actor="ops")
    assert ledger_state(quota.ledger) == before
    assert quota.policy_for("ada", []).max_gpus == 0


# the quota service's API ----------------------------------------------------------------
