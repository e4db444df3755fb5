"""``gpulab quota show|set|usage``, run as operators run it (the installed script) on a
SQLite ledger in ``tmp_path``."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gpulab.quota.ledger import Ledger
from gpulab.quota.models import allocations, audit_events, policy_overrides
from gpulab.quota.policy import Policy
from tests.core.test_ledger_cli import DEVICES, run


def state(url: str):
    with Ledger(url) as ledger, ledger.engine.connect() as conn:
        return [
            [tuple(r) for r in conn.execute(select(t))] for t in (policy_overrides, audit_events)
        ]


@pytest.fixture
def url(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    Ledger(url).close()
    return url


def quota(url, *args):
    return run("quota", *args, "--ledger", url)


def test_set_show_and_remove_overrides(url):
    result = quota(
        url, "set", "--group", "physics", "max_gpus=2", "gpu_hours=10", "window=1d",
        "profiles=cpu,1-gpu", "--actor", "ops",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "override of group 'physics' set: gpu_hours=10.0 max_gpus=2 profiles=1-gpu,cpu window=1d"
    )
    # KEY=VALUE merges into the current override; none means no limit.
    assert quota(url, "set", "--group", "physics", "max_gpus=none").returncode == 0
    assert (
        quota(url, "set", "--user", "bob", "max_session=8h", "max_dask_workers=4").returncode == 0
    )
    assert quota(url, "set", "--default", "gpu_hours=1.5").returncode == 0

    shown = quota(url, "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "overrides": {
            "defaults": {"gpu_hours": 1.5},
            "groups": {
                "physics": {
                    "gpu_hours": 10.0,
                    "max_gpus": None,
                    "profiles": ["1-gpu", "cpu"],
                    "window": 86400.0,
                }
            },
            "users": {"bob": {"max_dask_workers": 4, "max_session": 28800.0}},
        }
    }
    text = quota(url, "show").stdout
    assert "group physics: gpu_hours=10.0 max_gpus=none profiles=1-gpu,cpu window=1d" in text
    assert "config file's policies are not shown" in text

    with Ledger(url) as ledger:
        events = ledger.audit(action="limit_changed")[::-1]
    assert events[0].actor == "ops" and events[1].actor.startswith("cli:")
    assert events[1].detail["old"]["max_gpus"] == 2 and events[1].detail["new"]["max_gpus"] is None

    # --unset drops one key; --replace alone removes the override.
    assert quota(url, "set", "--group", "physics", "--unset", "gpu_hours").returncode == 0
    with Ledger(url) as ledger:
        assert "gpu_hours" not in ledger.policy_overrides()["groups"]["physics"]
    removed = quota(url, "set", "--user", "bob", "--replace")
    assert removed.stdout.strip() == "override of user 'bob' removed: (none)"
    with Ledger(url) as ledger:
        assert ledger.policy_overrides()["users"] == {}


def test_show_a_user_resolves_the_overrides_and_reports_usage(url):
    with Ledger(url) as ledger:
        ledger.set_policy("default", "", {"gpu_hours": 10, "window": "1d"}, actor="ops")
        ledger.set_policy("group", "physics", {"max_gpus": 3}, actor="ops")
        grant = ledger.admit(user="dora", server="", gpus=2, policy=Policy(), devices=DEVICES)
        with ledger.engine.begin() as conn:  # two hours ago: 4 GPU-hours so far
            row = conn.execute(select(allocations)).one()
            back = timedelta(hours=2)
            conn.execute(
                update(allocations).values(
                    granted_at=row.granted_at - back, last_accrued_at=row.last_accrued_at - back
                )
            )
        ledger.accrue({grant.allocation_id: 3.6e6})  # 1 kWh
    result = quota(url, "show", "--user", "dora", "--groups", "physics,chem", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["policy"]["max_gpus"] == 3 and report["policy"]["gpu_hours"] == 10.0
    assert report["groups"] == ["physics", "chem"]
    assert report["usage"]["gpus_held"] == 2
    assert report["usage"]["gpu_hours"] == pytest.approx(4.0, abs=0.01)
    assert report["usage"]["energy_kwh"] == pytest.approx(1.0)
    assert report["budget_left_gpu_hours"] == pytest.approx(6.0, abs=0.01)
    assert [a["id"] for a in report["allocations"]] == [grant.allocation_id]

    text = quota(url, "show", "--user", "dora").stdout
    assert "max_gpus: no limit" in text  # without --groups, physics' override doesn't apply
    assert "budget left: 6.00 GPU-hours" in text

    usage = quota(url, "usage", "--since", "1d")
    assert usage.returncode == 0, usage.stderr
    lines = usage.stdout.splitlines()
    assert lines[0] == "Usage in the last 1d:"
    assert lines[1].split() == ["user", "GPU-hours", "energy", "kWh", "GPUs", "held"]
    assert lines[2].split() == ["dora", "4.00", "1.000", "2"]
    as_json = json.loads(quota(url, "usage", "--json").stdout)
    assert as_json["since_seconds"] == 7 * 86400
    assert [u["user"] for u in as_json["users"]] == ["dora"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "bob", "max_gpus=-1"], "override.users['bob'].max_gpus must be a whole number"),
        (
            ["--user", "bob", "max_gpus=two"],
            "max_gpus must be a whole number >= 0 or None, not 'two'",
        ),
        (["--user", "bob", "max_gpu=1"], "unknown keys 'max_gpu' (did you mean 'max_gpus'?)"),
        (["--group", "g", "window=3x"], "override.groups['g'].window must be a duration"),
        (["--group", "g", "gpu_hours=-2"], "gpu_hours must be a number of GPU-hours >= 0"),
        (["--group", "g", "profiles=cpu,,x"], "profiles must be a list of profile names"),
        (["--default", "max_session=0"], "override.defaults.max_session must be a duration > 0"),
        (["--user", "bob", "max_gpus"], "expected KEY=VALUE"),
        (["--user", "bob", "max_gpus="], "max_gpus= needs a value"),
        (["--user", "bob", "max_gpus=1", "max_gpus=2"], "max_gpus is given twice"),
        (["--user", "bob", "--unset", "gpus"], "--unset gpus: not a policy key"),
        (["--user", "bob"], "nothing to set"),
        (["--user", "", "max_gpus=1"], "name must be a non-empty user name"),
        (["--group", "x" * 256, "max_gpus=1"], "name must be a non-empty group name"),
    ],
)
def test_bad_set_exits_2_naming_the_field_and_writes_nothing(url, args, message):
    with Ledger(url) as ledger:
        ledger.set_policy("user", "bob", {"max_gpus": 1}, actor="ops")
    before = state(url)
    result = quota(url, "set", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("gpulab quota set: ") and "Traceback" not in result.stderr
    assert state(url) == before


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["set", "max_gpus=1"], 2, "one of the arguments --default --group --user is required"),
        (["set", "--user", "a", "--group", "b", "max_gpus=1"], 2, "not allowed with argument"),
        (["usage", "--since", "3x"], 2, "--since must be"),
        (["show", "--groups", "a,b"], 2, "--groups needs --user"),
    ],
)
def test_bad_usage_exits_2(url, args, status, message):
    before = state(url)
    result = quota(url, *args)
    assert result.returncode == status
    assert message in result.stderr
    assert state(url) == before


def test_help_says_what_the_cli_sees_and_which_wins():
    result = run("quota", "set", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "config file (jupyterhub_config.py) < operator overrides in the ledger" in text
    assert "these commands see the ledger only" in text
