"""``gpulab ledger backup|restore|verify``, run as operators run it (the installed script)
on SQLite ledgers in ``tmp_path``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gpulab.quota.ledger import Ledger
from gpulab.quota.models import allocations, audit_events, device_leases, policy_overrides
from gpulab.quota.policy import Policy

GPULAB = str(Path(sys.executable).with_name("gpulab"))
DEVICES = tuple(f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(4))
TABLES = (allocations, device_leases, audit_events, policy_overrides)


def run(*args, env=None, cwd=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GPULAB_")}
    return subprocess.run(
        [GPULAB, *args],
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def rows(url: str) -> dict[str, list[tuple]]:
    with Ledger(url) as ledger, ledger.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in TABLES
        }


@pytest.fixture
def url(tmp_path):
    """A SQLite ledger with open and closed allocations, energy, a denial and overrides."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    with Ledger(url) as ledger:
        a = ledger.admit(user="ada", server="", gpus=2, policy=Policy(), devices=DEVICES)
        b = ledger.admit(user="bob", server="lab", gpus=1, policy=Policy(), devices=DEVICES)
        with pytest.raises(Exception, match="you hold 2 of your 2 GPUs"):
            ledger.admit(user="ada", server="x", gpus=1, policy=Policy(max_gpus=2), devices=DEVICES)
        ledger.accrue({a.allocation_id: 7.5})
        ledger.release(b.allocation_id, reason="idle", actor="culler")
        ledger.set_policy("group", "physics", {"max_gpus": 1, "window": "1d"}, actor="ops")
        ledger.set_policy("default", "", {"gpu_hours": 10}, actor="ops")
    return url


def test_backup_restore_round_trip(url, tmp_path):
    backup = run("ledger", "backup", str(tmp_path / "b.json"), "--ledger", url)
    assert backup.returncode == 0, backup.stderr
    assert backup.stdout.strip() == (
        f"backed up 2 allocations, 2 device leases, 6 audit events, 2 policy overrides "
        f"to {tmp_path / 'b.json'}"
    )
    assert json.loads((tmp_path / "b.json").read_text())["format"] == "gpulab-ledger"

    restored = f"sqlite:///{tmp_path}/restored.sqlite"  # a new file: restore creates it
    result = run("ledger", "restore", str(tmp_path / "b.json"), "--ledger", restored)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("restored 2 allocations, 2 device leases, 6 audit events")
    assert rows(restored) == rows(url)
    assert run("ledger", "verify", "--ledger", restored).returncode == 0


def test_restore_into_a_non_empty_ledger_needs_replace(url, tmp_path):
    assert run("ledger", "backup", str(tmp_path / "b.json"), "--ledger", url).returncode == 0
    with Ledger(url) as ledger:
        ledger.admit(user="cy", server="", gpus=1, policy=Policy(), devices=DEVICES)
    changed = rows(url)
    refused = run("ledger", "restore", str(tmp_path / "b.json"), "--ledger", url)
    assert refused.returncode == 2
    assert "the ledger is not empty; restore with --replace to overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert rows(url) == changed

    result = run("ledger", "restore", str(tmp_path / "b.json"), "--replace", "--ledger", url)
    assert result.returncode == 0, result.stderr
    assert len(rows(url)["allocations"]) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Expecting property name"),
        (json.dumps({"format": "other"}), "is not a gpulab ledger backup"),
        (json.dumps({"format": "gpulab-ledger", "version": 1}), "incomplete or malformed"),
    ],
)
def test_restore_of_a_bad_file_exits_2_and_changes_nothing(url, tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    before = rows(url)
    result = run("ledger", "restore", str(tmp_path / "bad.json"), "--replace", "--ledger", url)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.startswith("gpulab ledger restore: ")
    assert rows(url) == before


def test_verify_reports_problems_and_exits_1(url):
    assert run("ledger", "verify", "--ledger", url).stdout.strip() == "the ledger is consistent"
    with Ledger(url) as ledger, ledger.engine.begin() as conn:  # a lease lost behind its back
        conn.execute(device_leases.delete().where(device_leases.c.device_uuid == DEVICES[0]))
        conn.execute(update(policy_overrides).values(config={"max_gpus": "x"}))
    result = run("ledger", "verify", "--ledger", url)
    assert result.returncode == 1
    assert "open allocation 1 leases" in result.stdout
    assert "policy override ('default', '')" in result.stdout
    assert "the ledger has 3 problem(s)" in result.stderr


def test_the_ledger_url_comes_from_the_option_the_environment_or_the_state_dir(url, tmp_path):
    # GPULAB_LEDGER_URL
    result = run("ledger", "verify", env={"GPULAB_LEDGER_URL": url})
    assert result.returncode == 0, result.stderr
    # GPULAB_STATE_DIR/ledger.sqlite (the fixture's file is in tmp_path)
    result = run("ledger", "verify", env={"GPULAB_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    # ./var/ledger.sqlite by default: none here, and verify doesn't create one
    result = run("ledger", "verify", cwd=tmp_path)
    assert result.returncode == 2
    assert f"no ledger at sqlite:///{tmp_path / 'var' / 'ledger.sqlite'}" in result.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup", "{tmp}/missing/b.json"], "cannot write {tmp}/missing/b.json"),
        (["restore", "{tmp}/nope.json"], "{tmp}/nope.json is not a file"),
        (["verify", "--ledger", "not a url"], "--ledger must be a SQLAlchemy URL"),
        (["verify", "--ledger", "mysql://x/y"], "ledger url must be sqlite or postgresql"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(url, tmp_path, args, message):
    before = rows(url)
    args = [a.format(tmp=tmp_path) for a in args]
    if "--ledger" not in args:
        args += ["--ledger", url]
    result = run("ledger", *args)
    assert result.returncode == 2
    assert message.format(tmp=tmp_path) in result.stderr
    assert "Traceback" not in result.stderr
    assert rows(url) == before


def test_ledger_without_a_command_prints_help():
    result = run("ledger")
    assert result.returncode == 2
    assert "backup" in result.stdout and "GPULAB_LEDGER_URL" in result.stdout
