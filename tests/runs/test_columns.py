"""``read_columns`` gives what ``read_metrics`` gives, as columns, on clean and damaged files."""

import math

import numpy as np
import pytest

from gpulab.runs.columns import from_records, parse_columns


def expected(records, name):
    """Rows with a number for ``name`` (as read_metrics' consumers decide) and the values."""
    rows = [i for i, r in enumerate(records)
            if type(r.get(name)) in (int, float)]
    return rows, [float(records[i][name]) for i in rows]


def assert_same(columns, records):
    """The columns hold exactly the records' fields."""
    assert len(columns) == len(records)
    assert columns.step.tolist() == [r["step"] for r in records]
    assert columns.time.tolist() == [r["time"] for r in records]
    assert columns.rank.tolist() == [r["rank"] for r in records]
    assert columns.attempt.tolist() == [r.get("attempt", 0) for r in records]
    names = {n for r in records for n in r} - {"step", "time", "rank", "attempt"}
    numeric = {n for n in names if expected(records, n)[0]}
    assert set(columns.values) == numeric
    for name in numeric:
        rows, values = expected(records, name)
        present = columns.present.get(name, np.ones(len(records), dtype=bool))
        assert np.flatnonzero(present).tolist() == rows, name
        got = columns.values[name][rows]
        assert np.array_equal(got, np.array(values), equal_nan=True), name
        missing = np.flatnonzero(~present)
        assert np.isnan(columns.values[name][missing]).all(), name
    telemetry = [r for r in records if isinstance(r.get("gpu_uuid"), str)]
    assert [r["gpu_uuid"] for r in columns.telemetry] == [r["gpu_uuid"] for r in telemetry]
    if telemetry:
        assert columns.is_telemetry.tolist() == [
            isinstance(r.get("gpu_uuid"), str) for r in records]


def test_a_clean_run_reads_as_its_records(store):
    run = store.create("alice", "clean")
    for step in range(50):
        run.log(step, loss=1 / (step + 1), accuracy=step / 50, samples=32)
        if step % 7 == 0:
            run.log(step, gpu_uuid="GPU-1", gpu_power_w=100.0 + step, gpu_energy_wh=step / 10)
    for step in range(20):
        run.log(step, rank=1, loss=2.0)
    run.flush()
    records, cursor = run.read_metrics()
    blocks, columns_cursor = run.read_columns()
    assert columns_cursor == cursor
    by_rank = {int(block.rank[0]): block for block in blocks}
    for rank, block in by_rank.items():
        assert_same(block, [r for r in records if r["rank"] == rank])
    assert sorted(by_rank) == [0, 1]


def test_tailing_with_the_cursor_returns_each_record_once(store):
    run = store.create("alice", "tail")
    run.log(0, loss=1.0)
    run.flush()
    first, cursor = run.read_columns()
    assert [b.step.tolist() for b in first] == [[0.0]]
    run.log(1, loss=0.5)
    run.log(2, loss=0.25)
    run.flush()
    more, cursor = run.read_columns(since=cursor)
    assert [b.step.tolist() for b in more] == [[1.0, 2.0]]
    nothing, _ = run.read_columns(since=cursor)
    assert nothing == []


@pytest.mark.parametrize("lines", [
    # a number in one record and text in another (Arrow can't type the column)
    [b'{"step":0,"time":1.0,"rank":0,"attempt":0,"loss":1}',
     b'{"step":1,"time":2.0,"rank":0,"attempt":0,"loss":"diverged"}'],
    # a torn fragment, then a record appended to another fragment without a newline
    [b'{"step":0,"time":1.0,"rank":0,"attempt":0,"loss":1}',
     b'{"step":1,"time":2.0,"ra',
     b'{"step":2,"ti{"step":3,"time":4.0,"rank":0,"attempt":0,"loss":0.5}'],
    # not records: no step, a float step, a string rank, a list
    [b'{"time":1.0,"rank":0,"loss":1}',
     b'{"step":1.5,"time":1.0,"rank":0,"loss":1}',
     b'{"step":2,"time":1.0,"rank":"0","loss":1}',
     b'[1,2,3]',
     b'{"step":3,"time":3.0,"rank":0,"attempt":1,"loss":0.1}'],
    # NaN and infinity as logged values, bools, lists, nulls and a missing metric
    [b'{"step":0,"time":1.0,"rank":0,"attempt":0,"loss":NaN,"flag":true,"v":[1]}',
     b'{"step":1,"time":2.0,"rank":0,"attempt":0,"loss":Infinity,"acc":null}',
     b'{"step":2,"time":3.0,"rank":0,"attempt":0,"acc":0.5}'],
    # telemetry rows among metric rows, and a non-text gpu_uuid (not telemetry)
    [b'{"step":0,"time":1.0,"rank":0,"attempt":0,"loss":1.0}',
     b'{"step":0,"time":1.5,"rank":0,"attempt":0,"gpu_uuid":"GPU-a","gpu_power_w":90}',
     b'{"step":1,"time":2.0,"rank":0,"attempt":0,"gpu_uuid":7,"loss":0.5}'],
])
def test_damaged_or_mixed_lines_give_what_the_record_parser_gives(lines):
    from gpulab.runs.metrics import parse_lines

    block = b"\n".join(lines)
    records = parse_lines(block)
    assert_same(parse_columns(block), records)
    assert_same(from_records(records), records)


def test_a_million_step_run_parses_through_arrow_not_per_record(store, monkeypatch):
    """The clean path doesn't call the per-record parser (what makes it fast)."""
    import gpulab.runs.columns as columns_module

    run = store.create("alice", "big")
    writer = run.metrics_writer(0)
    for step in range(5000):
        writer.log(step, loss=math.exp(-step / 1000), accuracy=step / 5000)
    run.flush()

    def refuse(_):
        raise AssertionError("the record parser ran on clean lines")

    monkeypatch.setattr(columns_module, "parse_lines", refuse)
    (block,), _ = run.read_columns()
    assert len(block) == 5000
    assert block.values["loss"][1000] == pytest.approx(math.exp(-1))
    assert block.present == {}
