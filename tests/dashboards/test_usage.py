"""gpulab.dashboards.usage: GPU-hours and energy by user and group over time, and the open
allocations, from a real SQLite ledger."""

import html

import numpy as np
import pytest

from gpulab.dashboards.usage import DAY, HOUR, NO_GROUP, UsageData, UsageView, _spread
from gpulab.quota.ledger import Ledger
from gpulab.quota.policy import Policy
from tests.quota.conftest import DEVICES, backdate

EVIL = "<b>x</b>"


@pytest.fixture
def ledger(tmp_path):
    with Ledger(f"sqlite:///{tmp_path}/ledger.sqlite") as ledger:
        yield ledger


def test_usage_is_bucketed_by_user_and_group(ledger):
    ana = ledger.admit(user="ana", server="", gpus=2, policy=Policy(), devices=DEVICES)
    backdate(ledger, ana.allocation_id, 3 * HOUR)
    ledger.release(ana.allocation_id, reason="stopped", energy_joules=7200.0)
    bo = ledger.admit(user=EVIL, server="x", gpus=1, policy=Policy(), devices=DEVICES)
    backdate(ledger, bo.allocation_id, HOUR)
    data = UsageData.with_groups(ledger, {"ana": ["physics", "ml"]}, window_seconds=DAY)
    data.refresh()
    assert data.bucket_seconds == HOUR and len(data.edges) in (24, 25)
    assert data.totals["ana"]["gpu_hours"] == pytest.approx(6.0, abs=0.01)
    assert data.totals["ana"]["energy_wh"] == pytest.approx(2.0)
    assert data.totals[EVIL]["gpu_hours"] == pytest.approx(1.0, abs=0.01)  # open: to now
    assert data.totals[EVIL]["groups"] == [NO_GROUP]
    assert np.count_nonzero(data.by_user["ana"]) in (3, 4)  # spread over the hours it ran
    assert data.by_group["physics"].sum() == pytest.approx(6.0, abs=0.01)
    assert data.by_group["ml"].sum() == data.by_group["physics"].sum()
    (current,) = data.current
    assert (current["user"], current["server"], current["gpus"]) == (EVIL, "x", 1)
    data.window_seconds = 7 * DAY
    data.refresh()
    assert data.bucket_seconds == DAY


def test_spread_keeps_only_what_lies_in_the_window():
    edges = np.array([0.0, 10.0, 20.0])
    assert _spread(5, 15, edges, 10).tolist() == [0.5, 0.5, 0.0]
    assert _spread(-10, 10, edges, 10).tolist() == [0.5, 0.0, 0.0]
    assert _spread(12, 12, edges, 10).tolist() == [0.0, 1.0, 0.0]


def test_the_window_is_bounded(ledger):
    with pytest.raises(ValueError, match="window_seconds"):
        UsageData(ledger, window_seconds=10)


def test_the_view_escapes_names_and_follows_the_window(ledger, tmp_path):
    ledger.admit(user=EVIL, server="", gpus=1, policy=Policy(), devices=DEVICES)
    view = UsageView(data=UsageData(ledger, lambda user: [EVIL]))
    assert EVIL not in view._tables.object and html.escape(EVIL) in view._tables.object
    assert len(view._plots.objects) == 4
    empty = UsageView(data=UsageData(Ledger(f"sqlite:///{tmp_path}/empty.sqlite")))
    assert empty._plots.objects == [] and "no GPU use" in empty._tables.object
    view._window.value = "1 day"
    assert view.data.window_seconds == DAY and view.data.bucket_seconds == HOUR
