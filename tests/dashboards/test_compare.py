"""gpulab.dashboards.compare: the chosen metric, what each run's curve holds (LTTB on the
server), the configs and final results table, and what updates as the runs grow."""

import html

import pytest

from gpulab.dashboards.compare import MAX_RUNS, CompareData, CompareView
from gpulab.runs import RunStore

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def runs(tmp_path):
    store = RunStore(tmp_path / "runs")
    a = store.create("ada", "small lr", config={"lr": 0.001, "layers": 2})
    b = store.create("bo", EVIL, config={"lr": 0.1, EVIL: EVIL})
    for step in range(50):
        a.log(step, loss=1.0 / (step + 1), acc=step / 50)
        b.log(step, loss=2.0 / (step + 1))
    a.flush()
    b.flush()
    return a, b


def test_the_first_common_metric_is_overlaid_and_each_curve_is_downsampled(runs):
    a, b = runs
    data = CompareData(list(runs), threshold=10)
    assert data.metrics == ["acc", "loss"]
    assert data.metric == "loss"  # the only metric both logged
    lines = data.lines()
    assert [d.run.id for d, _, _ in lines] == [a.id, b.id]
    for _, steps, _ in lines:
        assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 49
    assert lines[1][2][0] == 2.0
    data.metric = "acc"
    assert [d.run.id for d, _, _ in data.lines()] == [a.id]  # b has no acc
    with pytest.raises(ValueError, match="metric"):
        data.metric = "nope"


def test_the_table_lists_configs_and_last_values(runs):
    header, rows = CompareData(list(runs)).table()
    assert header == ["run", "owner", "status", f"config: {EVIL}", "config: layers",
                      "config: lr", "last acc", "last loss"]
    assert rows[0] == ["small lr", "ada", "running", "", "2", "0.001", "0.98", "0.02"]
    assert rows[1][:4] == [EVIL, "bo", "running", EVIL]
    assert rows[1][-2:] == ["", "0.04"]


def test_new_points_update_the_curves_and_the_view_escapes_everything(runs):
    a, b = runs
    view = CompareView(data=CompareData(list(runs)))
    sources = list(view._sources.values())
    assert [max(s.data["x"]) for s in sources] == [49, 49]
    b.log(50, loss=0.001)
    b.flush()
    version = view.data.version
    view.refresh()
    assert view.data.version == version + 1
    assert [max(s.data["x"]) for s in sources] == [49, 50]
    table = view._table.object
    assert EVIL not in table and html.escape(EVIL) in table
    assert all(label == html.escape(name) for label, name in view._chooser.options.items())


def test_too_many_runs_are_refused(runs):
    with pytest.raises(ValueError, match="runs"):
        CompareData([runs[0]] * (MAX_RUNS + 1))
