"""The metrics writer and reader on real files: what a record holds, what is refused, the
cursor, and the cost of logging every step."""

import json
import math
import os
import time

import numpy as np
import pytest

from gpulab.runs import InvalidRunInput, MetricsWriter, RunStore
from gpulab.runs.metrics import read_file


def test_a_record_is_one_json_line_with_step_time_rank_attempt(store):
    run = store.create("alice")
    before = time.time()
    run.log(7, rank=2, loss=0.5, tag="warmup", hist=[1, 2], nested={"a": None})
    run.close()
    with open(os.path.join(run.folder.path, "metrics", "rank-2.jsonl"), "rb") as f:
        data = f.read()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    record = json.loads(data)
    assert list(record)[:4] == ["step", "time", "rank", "attempt"]
    assert record["step"] == 7 and record["rank"] == 2 and record["attempt"] == 0
    assert before <= record["time"] <= time.time()
    assert record["tag"] == "warmup" and record["hist"] == [1, 2] and record["nested"] == {
        "a": None}


def test_numpy_scalars_and_nan_are_logged(store):
    run = store.create("alice")
    run.log(np.int64(3), loss=np.float32(0.25), acc=np.array(0.5), diverged=float("nan"),
            grad=float("inf"))
    (record,), _ = run.read_metrics()
    assert record["step"] == 3 and record["loss"] == 0.25 and record["acc"] == 0.5
    assert math.isnan(record["diverged"]) and record["grad"] == math.inf


@pytest.mark.parametrize(("step", "metrics", "message"), [
    (-1, {}, "step must be >= 0, not -1"),
    (1.5, {}, "step is an integer, not 1.5"),
    (True, {}, "step is an integer, not True"),
    (1, {"time": 3}, r"\['time'\] can't be metric names"),
    (1, {"attempt": 3}, r"\['attempt'\] can't be metric names"),
    (1, {"weights": np.zeros(3)}, "metric 'weights' is not a JSON value: ndarray with more"),
    (1, {"model": object()}, "metric 'model' is not a JSON value: a object is not"),
    (1, {"blob": "x" * (1 << 20)}, "a metrics record is at most 1048576 bytes"),
])
def test_bad_records_are_refused_and_nothing_is_written(store, step, metrics, message):
    run = store.create("alice")
    with pytest.raises(InvalidRunInput, match=message):
        run.log(step, **metrics)
    run.close()
    assert os.path.getsize(os.path.join(run.folder.path, "metrics", "rank-0.jsonl")) == 0


def test_bad_cursors_and_writers_are_refused(store):
    run = store.create("alice")
    for since in (5, "0", {"a": 1}, {"0": -1}, {"0": 1.5}):
        with pytest.raises(InvalidRunInput, match="cursor|since is the cursor"):
            run.read_metrics(since)
    with pytest.raises(InvalidRunInput, match="rank must be in 0..999999"):
        run.log(0, rank=-1, loss=1.0)
    with pytest.raises(InvalidRunInput, match="sync_interval is seconds >= 0 or None"):
        MetricsWriter(run.folder.child("metrics"), 0, sync_interval=-1)
    writer = run.metrics_writer(0)
    writer.close()
    with pytest.raises(ValueError, match="is closed"):
        writer.log(1, loss=1.0)
    assert run.metrics_writer(0) is writer  # the run's cache: close() forgets it
    run.close()
    assert run.metrics_writer(0) is not writer


def test_a_cursor_at_the_end_of_a_file_and_a_missing_file(store):
    run = store.create("alice")
    assert run.read_metrics() == ([], {})
    folder = run.folder.child("metrics")
    assert read_file(folder, "rank-0.jsonl", 0) == ([], 0)
    run.log(0, loss=1.0)
    records, cursor = run.read_metrics({"0": 0, "5": 0})  # a rank with no file yet
    assert len(records) == 1 and cursor["5"] == 0


def test_records_longer_than_a_read_chunk_are_read_whole(tmp_path):
    run = RunStore(tmp_path).create("alice")
    writer = run.metrics_writer(0)
    writer.max_record_bytes = 20 << 20
    writer.log(0, blob="b" * (9 << 20))  # bigger than the reader's 4 MiB chunk
    writer.log(1, small=True)
    writer.close()
    records, _ = run.read_metrics()
    assert [r["step"] for r in records] == [0, 1] and len(records[0]["blob"]) == 9 << 20
    paged, cursor = run.read_metrics(max_bytes=1024)  # a page holds at least one record
    assert [r["step"] for r in paged] == [0]
    assert [r["step"] for r in run.read_metrics(cursor)[0]] == [1]


def test_logging_every_step_keeps_fsync_off_the_per_step_path(store, monkeypatch):
    """The default sync interval (2 s) syncs at most once per interval, not per record:
    what keeps run.log at microseconds (measured by bench.ddp's logging row)."""
    import gpulab.runs.metrics as metrics

    syncs = []
    monkeypatch.setattr(metrics, "_datasync", lambda fd: syncs.append(time.monotonic()))
    run = store.create("alice")
    run.log(0, loss=1.0)
    count = 20_000
    started = time.monotonic()
    for step in range(1, count + 1):
        run.log(step, loss=0.5, lr=0.001, samples_per_s=1234.5)
    elapsed = time.monotonic() - started
    assert len(syncs) <= 1 + elapsed / metrics.DEFAULT_SYNC_INTERVAL
    run.close()  # and one on close: the last records are durable
    assert len(syncs) >= 1 and syncs[-1] >= started
    assert len(run.read_metrics()[0]) == count + 1
