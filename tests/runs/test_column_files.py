"""Column files (``gpulab.runs.column_files``): the writer saves its lines' columns, and
``read_columns`` gives exactly what the JSON lines give, reading the column files where
they still match and the JSON lines everywhere else."""

import math
import os
import signal
import threading

import pytest

import gpulab.runs.columns as columns_module
from gpulab.runs import Run, column_files
from gpulab.runs.metrics import MetricsWriter, metrics_file
from tests.runs.test_columns import assert_same
from tests.waiting import poll

SPAN = 4096  # bytes of lines a column file: a few dozen records


def write(run, steps, *, rank=0, attempt=0, span=SPAN, first=0, close=True):
    """``steps`` records of a metric, telemetry now and then, a metric that appears late."""
    writer = MetricsWriter(run.folder.child("metrics"), rank, attempt=attempt,
                           column_span_bytes=span)
    for step in range(first, first + steps):
        extra = {"late": step / 2} if step > first + steps // 2 else {}
        writer.log(step, loss=math.exp(-step / 50), **extra)
        if step % 9 == 0:
            writer.log(step, gpu_uuid="GPU-a", gpu_power_w=100.0 + step)
    if close:
        writer.close()
    return writer


def saved(run, rank=0):
    return column_files.spans(run.folder.child("metrics")).get(rank, [])


def json_only(run):
    """What the JSON lines alone give: read with the column files out of the way."""
    folder = run.folder.child("metrics").child(column_files.FOLDER)
    aside = run.folder.child("aside")
    run.folder.fs.mv(folder.path, aside.path, recursive=True)
    try:
        return run.read_columns()
    finally:
        run.folder.fs.mv(aside.path, folder.path, recursive=True)


def records_of(run, rank=0):
    records, _ = run.read_metrics()
    return [r for r in records if r["rank"] == rank]


@pytest.fixture
def parsed_bytes(monkeypatch):
    """The bytes of JSON lines read_columns parses (not those it loads from column files)."""
    counted = []
    parse = columns_module.parse_columns

    def counting(lines):
        counted.append(len(lines))
        return parse(lines)

    monkeypatch.setattr(columns_module, "parse_columns", counting)
    return counted


def test_a_closed_runs_columns_come_from_its_column_files(store, parsed_bytes):
    run = store.create("alice", "spans")
    write(run, 400, span=SPAN)
    spans = saved(run)
    assert len(spans) > 5
    # Contiguous from the file's start to its end (the remainder is under 1 MiB: left
    # to the JSON parser).
    assert spans[0].start == 0
    assert all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))
    size = run.folder.child("metrics").size(metrics_file(0))
    parsed_bytes.clear()
    (block,), cursor = run.read_columns()
    assert cursor == {"0": size}
    assert sum(parsed_bytes) < size - spans[-1].end + 1  # only the remainder parsed
    assert_same(block, records_of(run))
    assert block.values["late"][0] != block.values["late"][0]  # NaN before it appears
    assert block.telemetry[0]["gpu_uuid"] == "GPU-a"


def test_the_column_files_give_what_the_json_lines_give(store):
    run = store.create("alice", "same")
    write(run, 300)
    (from_files,), cursor = run.read_columns()
    (from_json,), json_cursor = json_only(run)
    assert cursor == json_cursor
    assert_same(from_files, records_of(run))
    assert_same(from_json, records_of(run))


def metric_steps(blocks):
    """The steps of the blocks' metric records (not telemetry), in order."""
    steps = []
    for block in blocks:
        rows = block.is_telemetry if block.is_telemetry is not None else [False] * len(block)
        steps += [int(step) for step, telemetry in zip(block.step, rows, strict=True)
                  if not telemetry]
    return steps


def test_a_live_reader_gets_each_record_once_whatever_the_spans(store):
    run = store.create("alice", "live")
    writer = write(run, 50, close=False)
    seen, cursor = [], None
    for first in (50, 120, 190):
        blocks, cursor = run.read_columns(since=cursor)  # stops inside some span
        seen += metric_steps(blocks)
        for step in range(first, first + 70):
            writer.log(step, loss=1.0)
        writer.flush()
    writer.close()
    blocks, cursor = run.read_columns(since=cursor)
    seen += metric_steps(blocks)
    assert len(saved(run)) > 3
    assert seen == [r["step"] for r in records_of(run) if "loss" in r]
    assert seen == list(range(260))


@pytest.mark.parametrize("damage", ["changed", "cut", "garbage column file"])
def test_a_column_file_that_no_longer_matches_is_not_used(store, damage):
    run = store.create("alice", "damaged")
    write(run, 300)
    spans = saved(run)
    metrics = run.folder.child("metrics")
    path = metrics.file(metrics_file(0))
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if damage == "changed":  # a digit in the last line of the second span
        at = data.rindex(b"0", 0, spans[1].end)
        data[at:at + 1] = b"1"
    elif damage == "cut":
        data = data[: spans[1].end - 10]
    if damage == "garbage column file":
        metrics.child(column_files.FOLDER).write_atomic(spans[1].name, b"not arrow")
    else:
        with open(path, "wb") as f:
            f.write(bytes(data))
    assert column_files.load(metrics, metrics_file(0), spans[1]) is None
    (block,), cursor = run.read_columns()
    (expected,), expected_cursor = json_only(run)
    assert cursor == expected_cursor
    assert block.step.tolist() == expected.step.tolist()
    assert_same(block, records_of(run))


def test_a_gap_a_killed_writer_left_is_read_from_the_json_lines(store):
    run = store.create("alice", "gap")
    # The first writer is gone without closing: its last lines have no column file...
    first = write(run, 150, close=False)
    first._fd, fd = None, first._fd
    os.close(fd)
    with open(run.folder.child("metrics").file(metrics_file(0)), "ab") as f:
        f.write(b'{"step":150,"ti')  # ...and it tore its last record
    # The next attempt appends after the torn line, with column files of its own.
    write(run, 150, attempt=1, first=150)
    spans = saved(run)
    assert any(a.end < b.start for a, b in zip(spans, spans[1:], strict=False))
    (block,), _ = run.read_columns()
    assert_same(block, records_of(run))
    assert block.attempt.max() == 1


def test_threads_logging_at_once_keep_the_spans_on_record_boundaries(store):
    run = store.create("alice", "threads")
    writer = MetricsWriter(run.folder.child("metrics"), 0, column_span_bytes=SPAN)

    def log(offset):
        for step in range(offset, 2000, 4):
            writer.log(step, loss=float(step))

    threads = [threading.Thread(target=log, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert len(saved(run)) > 10
    (block,), _ = run.read_columns()
    assert sorted(block.step.tolist()) == list(map(float, range(2000)))
    assert_same(block, records_of(run))


def test_an_object_store_run_gets_column_files_too(memory_store):
    run = memory_store.create("alice", "remote")
    # Buffered there: each push (here each flush) appends a batch, cut into spans.
    writer = MetricsWriter(run.folder.child("metrics"), 0, column_span_bytes=SPAN)
    for step in range(300):
        writer.log(step, loss=1.0 / (step + 1))
        if step % 60 == 59:
            writer.flush()
    writer.close()
    assert len(saved(run)) == 5
    (block,), _ = run.read_columns()
    assert_same(block, records_of(run))


def test_column_files_that_cant_be_written_leave_logging_and_reading_alone(store, caplog):
    run = store.create("alice", "readonly")
    metrics = run.folder.child("metrics")
    metrics.makedirs()
    # A file where the columns folder would be: every save fails.
    open(metrics.file(column_files.FOLDER), "w").close()
    write(run, 300)
    assert saved(run) == []
    assert sum("no column files" in r.message for r in caplog.records) == 1  # once
    (block,), _ = run.read_columns()
    assert_same(block, records_of(run))


def test_switched_off_no_column_files_are_written(store):
    run = store.create("alice", "off")
    write(run, 300, span=None)
    assert not run.folder.child("metrics").child(column_files.FOLDER).names()


def test_a_bad_span_size_is_refused_by_name(store):
    run = store.create("alice", "bad")
    with pytest.raises(ValueError, match="column_span_bytes"):
        MetricsWriter(run.folder.child("metrics"), 0, column_span_bytes=0)


def test_a_writer_killed_mid_run_leaves_files_the_reader_agrees_with(store, spawn_writer):
    run = store.create("alice", "killed")
    # Records of about 100 kB: a column file every 80 or so (8 MiB spans).
    process = spawn_writer("metrics", run.url, 0, 0, 100_000)
    assert process.stdout.readline().strip() == "READY"
    poll(lambda: len(saved(run)) >= 2, timeout=60, what="two column files")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    (block,), cursor = run.read_columns()
    records, metrics_cursor = run.read_metrics()
    assert cursor == metrics_cursor
    assert block.step.tolist() == [r["step"] for r in records]
    assert block.values["check"].tolist() == [r["check"] for r in records]
    assert Run.attach(run.url).read_columns()[1] == cursor


def test_a_killed_writers_half_saved_column_file_is_removed_by_the_next_save(store):
    run = store.create("alice", "stale")
    folder = run.folder.child("metrics").child(column_files.FOLDER)
    folder.makedirs()
    stale, fresh = folder.file(".rank-0.x.arrow.old.tmp"), folder.file(".rank-0.y.arrow.new.tmp")
    for path in (stale, fresh):
        with open(path, "wb") as f:
            f.write(b"half a column file")
    os.utime(stale, (1, 1))
    write(run, 100)
    assert saved(run)
    names = folder.names()
    assert ".rank-0.x.arrow.old.tmp" not in names
    assert ".rank-0.y.arrow.new.tmp" in names  # may be another writer's save under way


def test_each_ranks_column_files_serve_that_rank_only(store):
    run = store.create("alice", "ranks")
    write(run, 200, rank=0)
    write(run, 120, rank=1)
    assert len(saved(run, 0)) >= 3 and len(saved(run, 1)) >= 2
    blocks, cursor = run.read_columns()
    assert cursor == run.read_metrics()[1]
    by_rank = {int(block.rank[0]): block for block in blocks}
    assert sorted(by_rank) == [0, 1]
    for rank, block in by_rank.items():
        assert_same(block, records_of(run, rank))
