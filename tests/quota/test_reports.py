"""The quota reports the service's API returns, from a real SQLite ledger."""

import pytest

from gpulab.quota.policy import Policy
from gpulab.quota.reports import usage_report, user_report
from tests.quota.conftest import DEVICES, backdate

HOUR = 3600.0


def test_user_report_counts_usage_in_the_window_and_the_budget_left(sqlite_ledger):
    policy = Policy(max_gpus=2, gpu_hours=10.0, window_seconds=24 * HOUR)
    g = sqlite_ledger.admit(user="ana", server="", gpus=2, policy=policy, devices=DEVICES)
    backdate(sqlite_ledger, g.allocation_id, HOUR)
    report = user_report(sqlite_ledger, "ana", policy, warnings=[])
    assert report["usage"]["gpu_hours"] == pytest.approx(2.0, abs=0.01)
    assert report["budget_left_gpu_hours"] == pytest.approx(8.0, abs=0.01)
    assert report["usage"]["gpus_held"] == 2
    (allocation,) = report["allocations"]
    assert allocation["devices"] == list(g.device_uuids)
    assert report["limits"]["max_gpus"] == 2
    unlimited = user_report(sqlite_ledger, "ana", Policy(), warnings=[])
    assert unlimited["budget_left_gpu_hours"] is None


def test_usage_report_lists_who_used_gpus_in_the_period(sqlite_ledger):
    policy = Policy()
    a = sqlite_ledger.admit(user="ana", server="", gpus=1, policy=policy, devices=DEVICES)
    sqlite_ledger.admit(user="bo", server="", gpus=0, policy=policy, devices=DEVICES)
    backdate(sqlite_ledger, a.allocation_id, 600)
    report = usage_report(sqlite_ledger, 3600, {"ana": ["physics"]})
    assert set(report["users"]) == {"ana", "bo"}
    assert report["users"]["ana"]["gpu_seconds"] == pytest.approx(600, abs=5)
    assert report["users"]["ana"]["groups"] == ["physics"]
    assert report["users"]["bo"]["gpu_seconds"] == 0
    assert report["groups"]["physics"]["gpu_seconds"] == pytest.approx(600, abs=5)
    assert report["groups"]["(no group)"]["gpu_seconds"] == 0
