"""The run store end to end on real files (and on memory:// for the fsspec path): create,
log, checkpoint, artifacts, statuses and restarts, the reader API, attach from a URL."""

import json
import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

from gpulab.runs import (
    Run,
    RunNotFound,
    RunStateError,
    RunStore,
    default_root,
    drop_superseded,
)
from gpulab.runs.metrics import read_folder


def tail_all(read, since=None, **kwargs):
    """Read pages until nothing new comes: (all records, final cursor)."""
    records, cursor = read(since, **kwargs)
    while True:
        more, following = read(cursor, **kwargs)
        if following == cursor:
            return records, cursor
        records += more
        cursor = following


def test_round_trip_create_log_checkpoint_finish(store):
    run = store.create("alice", "mlp <b>v1</b>", config={"lr": 0.01, "betas": (0.9, 0.99)},
                       world_size=2, devices=["GPU-aaaa", "GPU-bbbb"], extra={"notebook": "a"})
    assert run.manifest().status == "running"
    for step in range(1000):
        run.log(step, loss=1 / (step + 1), lr=0.01)
        if step % 10 == 0:
            run.log(step, rank=1, gpu_util=50 + step % 7)
        if step % 100 == 99:
            run.save_checkpoint(step, {"step": step, "weights": [step] * 10})
    assert [c.step for c in run.checkpoints()] == [799, 899, 999]  # the last 3
    assert run.latest_checkpoint().step == 999
    assert run.load_latest() == (999, {"step": 999, "weights": [999] * 10})
    run.save_artifact("summary.json", b'{"best": 0.1}')
    run.finish()
    run.close()

    manifest = store.manifest("alice", run.id)
    assert manifest.status == "finished" and manifest.ended and manifest.error is None
    assert manifest.name == "mlp <b>v1</b>"
    assert manifest.config == {"lr": 0.01, "betas": [0.9, 0.99]}
    assert (manifest.world_size, manifest.devices) == (2, ["GPU-aaaa", "GPU-bbbb"])
    assert manifest.checkpoints == [799, 899, 999] and manifest.restarts == []
    assert manifest.extra == {"notebook": "a"} and manifest.owner == "alice"
    assert manifest.created <= manifest.updated
    with open(os.path.join(run.folder.path, "manifest.json")) as f:
        on_disk = json.load(f)
    assert on_disk["id"] == run.id and on_disk["status"] == "finished"

    records, cursor = store.read_metrics("alice", run.id)
    rank0 = [r for r in records if r["rank"] == 0]
    rank1 = [r for r in records if r["rank"] == 1]
    assert [r["step"] for r in rank0] == list(range(1000))
    assert [r["step"] for r in rank1] == list(range(0, 1000, 10))
    assert rank0[3] == {"step": 3, "time": rank0[3]["time"], "rank": 0, "attempt": 0,
                        "loss": 0.25, "lr": 0.01}
    times = [r["time"] for r in records]
    assert times == sorted(times)  # ranks merged by time
    assert store.read_metrics("alice", run.id, since=cursor) == ([], cursor)
    # the cursor survives JSON (a dashboard's live tail over HTTP)
    assert store.read_metrics("alice", run.id, since=json.loads(json.dumps(cursor)))[0] == []
    # in pages of ~4 KiB: every record exactly once, in order
    paged, end = tail_all(lambda since, **kw: store.read_metrics("alice", run.id, since, **kw),
                          max_bytes=4096)
    assert end == cursor
    assert sorted(paged, key=lambda r: (r["rank"], r["step"])) == sorted(
        records, key=lambda r: (r["rank"], r["step"]))

    assert sorted(os.listdir(run.folder.path)) == [
        ".lock", "artifacts", "checkpoints", "manifest.json", "metrics"]
    assert sorted(os.listdir(os.path.join(run.folder.path, "metrics"))) == [
        "rank-0.jsonl", "rank-1.jsonl"]
    assert sorted(os.listdir(os.path.join(run.folder.path, "checkpoints"))) == [
        "step-799.ckpt", "step-899.ckpt", "step-999.ckpt"]
    assert run.list_artifacts() == ["summary.json"]


def test_list_runs_newest_first_and_skips_what_is_not_a_run(store):
    first = store.create("alice", "first")
    time.sleep(1.01)  # ids sort by the second
    second = store.create("alice", "second", start=False)
    store.create("bob", "not alice's")
    os.makedirs(os.path.join(store.root.path, "alice", "20990101-000000-abcdef"))  # no manifest
    os.makedirs(os.path.join(store.root.path, "alice", "notes"))
    assert [(m.id, m.name, m.status) for m in store.list_runs("alice")] == [
        (second.id, "second", "created"), (first.id, "first", "running")]
    assert [m.id for m in store.list_runs("alice", limit=1)] == [second.id]
    assert store.list_runs("carol") == []


def test_statuses_errors_and_restarts_are_recorded(store):
    run = store.create("alice", start=False)
    assert run.manifest().status == "created"
    run.start()
    run.log(0, loss=1.0)
    run.save_checkpoint(5, {"step": 5})
    restarted = run.record_restart("worker tcp://10.0.0.2:4000 died", from_step=5)
    assert restarted.status == "running" and restarted.attempt == 1
    (restart,) = restarted.restarts
    assert restart["reason"] == "worker tcp://10.0.0.2:4000 died"
    assert restart["from_checkpoint_step"] == 5 and restart["at"]
    run.log(6, loss=0.5)
    run.record_restart("rank 1 raised", from_step=None)
    try:
        raise ZeroDivisionError("loss is 1/0")
    except ZeroDivisionError as e:
        failed = run.fail(e, rank=1)
    assert failed.status == "failed" and failed.ended
    assert failed.error["message"] == "ZeroDivisionError: loss is 1/0"
    assert failed.error["rank"] == 1
    assert "raise ZeroDivisionError" in failed.error["traceback"]
    assert [r["from_checkpoint_step"] for r in store.manifest("alice", run.id).restarts] == [
        5, None]
    records, _ = run.read_metrics()
    assert [(r["step"], r["attempt"]) for r in records] == [(0, 0), (6, 1)]
    with pytest.raises(RunStateError, match="is failed; it can't become finished") as caught:
        run.finish()
    assert caught.value.status_code == 409
    with pytest.raises(RunStateError):
        run.record_restart("again")
    assert store.manifest("alice", run.id).status == "failed"

    done = store.create("alice")
    done.finish()
    with pytest.raises(RunStateError, match="is finished; it can't become failed"):
        done.fail("late")


def test_fail_with_a_message_rank_and_traceback_text(store):
    run = store.create("alice")
    manifest = run.fail("NCCL timeout", rank=3, traceback="Traceback...\n" + "x" * 100_000)
    assert manifest.error["message"] == "NCCL timeout" and manifest.error["rank"] == 3
    assert len(manifest.error["traceback"]) == 64 * 1024  # the tail is kept


def test_a_run_as_a_context_manager_finishes_or_fails(store):
    with store.create("alice") as run:
        run.log(0, loss=1.0)
    assert run.manifest().status == "finished"
    with pytest.raises(KeyError), store.create("alice") as run:
        raise KeyError("batch")
    manifest = run.manifest()
    assert manifest.status == "failed" and manifest.error["message"] == "KeyError: 'batch'"


def test_replayed_steps_after_a_restart_are_dropped_by_the_reader_helper(store):
    run = store.create("alice")
    for step in range(13):
        run.log(step, loss=float(step))
        if step == 10:
            run.save_checkpoint(10, {"step": 10})
    run.record_restart("worker died", from_step=run.latest_checkpoint().step)
    for step in range(11, 20):
        run.log(step, loss=float(step))
    records, _ = run.read_metrics()
    assert [r["step"] for r in records].count(11) == 2
    kept = drop_superseded(records, run.manifest().restarts)
    assert [r["step"] for r in kept] == list(range(20))
    assert all(r["attempt"] == (1 if r["step"] > 10 else 0) for r in kept)


def test_a_process_that_knows_only_the_url_attaches(store):
    run = store.create("alice", world_size=2)
    other = Run.attach(run.url)
    assert (other.owner, other.id) == ("alice", run.id)
    other.log(1, rank=1, loss=0.5)
    other.close()
    assert run.read_metrics()[0][0]["rank"] == 1
    copy = pickle.loads(pickle.dumps(run))  # how a Run travels to a Dask worker
    assert copy.url == run.url and copy.keep_checkpoints == 3
    assert Run.attach(run.folder.path).url == run.url  # a plain path works too
    with pytest.raises(RunNotFound):
        Run.attach(os.path.join(store.root.path, "alice", "20990101-000000-abcdef"))


def test_update_records_topology_and_extra(store):
    run = store.create("alice")
    run.update(world_size=4, devices=["GPU-1", "GPU-2", "GPU-3", "GPU-4"], extra={"a": 1})
    run.update(extra={"b": [1, 2]})
    manifest = run.manifest()
    assert manifest.world_size == 4 and len(manifest.devices) == 4
    assert manifest.extra == {"a": 1, "b": [1, 2]}


def test_artifacts_from_bytes_and_from_a_file(store, tmp_path):
    run = store.create("alice")
    source = tmp_path / "model.onnx"
    source.write_bytes(b"\x00onnx" * 1000)
    url = run.save_artifact("model.onnx", source)
    run.save_artifact("plot.svg", b"<svg/>")
    run.save_artifact("plot.svg", bytearray(b"<svg>2</svg>"))  # replaced atomically
    assert url == f"file://{run.folder.path}/artifacts/model.onnx"
    assert run.list_artifacts() == ["model.onnx", "plot.svg"]
    assert run.read_artifact("model.onnx") == source.read_bytes()
    assert run.read_artifact("plot.svg") == b"<svg>2</svg>"
    with pytest.raises(RunNotFound, match="no artifact 'nope'"):
        run.read_artifact("nope")
    with pytest.raises(ValueError, match="no file"):
        run.save_artifact("x", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="bytes or a file's path, not dict"):
        run.save_artifact("x", {})


def test_default_root_is_the_env_var_else_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GPULAB_RUNS_DIR", str(tmp_path / "shared"))
    assert RunStore().root.path == str(tmp_path / "shared")
    monkeypatch.delenv("GPULAB_RUNS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == str(tmp_path / "home" / "gpulab-runs")
    assert RunStore().url == f"file://{tmp_path}/home/gpulab-runs"
    assert RunStore("~/elsewhere").root.path == str(tmp_path / "home" / "elsewhere")


def test_everything_works_on_an_fsspec_memory_filesystem(memory_store):
    store = memory_store
    run = store.create("alice", "<i>mem</i>", config={"lr": 0.1})
    assert run.url.startswith("memory://")
    for step in range(100):
        run.log(step, loss=float(step))
        run.log(step, rank=1, util=1)
    run.flush()  # on stores without a local file, records go out in batches
    records, cursor = store.read_metrics("alice", run.id)
    assert len(records) == 200 and cursor == {"0": cursor["0"], "1": cursor["1"]}
    run.log(100, loss=0.0)
    run.flush()
    more, cursor2 = store.read_metrics("alice", run.id, since=cursor)
    assert [r["step"] for r in more] == [100]
    for step in (1, 2, 3, 4):
        run.save_checkpoint(step, {"step": step})
    assert [c.step for c in run.checkpoints()] == [2, 3, 4]
    assert run.load_latest() == (4, {"step": 4})
    run.save_artifact("a.txt", b"hello")
    assert run.list_artifacts() == ["a.txt"] and run.read_artifact("a.txt") == b"hello"
    attached = Run.attach(run.url)
    attached.record_restart("test", 4)
    run.finish()
    run.close()
    (manifest,) = store.list_runs("alice")
    assert (manifest.name, manifest.status, manifest.checkpoints) == ("<i>mem</i>", "finished",
                                                                       [2, 3, 4])
    assert len(manifest.restarts) == 1
    names = store.root.fs.find(store.root.path)
    assert not [n for n in names if n.endswith(".tmp")]


def test_tailing_while_a_thread_appends_returns_every_record_once_in_order(store):
    run = store.create("alice")
    count = 5000
    done = threading.Event()

    def write():
        writer = Run.attach(run.url).metrics_writer(0)
        for step in range(count):
            writer.log(step, loss=1.0, note="y" * (step % 300))
        writer.close()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen, cursor, reads = [], None, 0
    while not (done.is_set() and len(seen) == count):
        records, cursor = run.read_metrics(cursor)
        seen += [r["step"] for r in records]
        reads += 1
    thread.join()
    assert seen == list(range(count))
    assert reads > 2  # it really tailed


def test_tailing_while_other_processes_append(store, spawn_writer):
    run = store.create("alice", world_size=2)
    count = 2000
    writers = [spawn_writer("tail", run.url, rank, count) for rank in (0, 1)]
    seen = {0: [], 1: []}
    cursor = None
    deadline = time.monotonic() + 20
    while any(len(steps) < count for steps in seen.values()):
        assert time.monotonic() < deadline, {r: len(s) for r, s in seen.items()}
        records, cursor = store.read_metrics("alice", run.id, since=cursor)
        for record in records:
            seen[record["rank"]].append(record["step"])
    for process in writers:
        assert process.stdout.readline().strip() == "DONE"
        assert process.wait(10) == 0
    assert seen == {0: list(range(count)), 1: list(range(count))}
    assert read_folder(run.folder.child("metrics"), cursor) == ([], cursor)


def test_manifest_updates_from_two_writers_lose_nothing(store):
    """The launcher records restarts while rank 0 records checkpoints: the lock serialises."""
    run = store.create("alice")
    other = Run.attach(run.url)

    def launcher():
        for i in range(40):
            other.update(extra={f"k{i}": i})

    thread = threading.Thread(target=launcher)
    thread.start()
    for step in range(40):
        run.save_checkpoint(step, writer=lambda f: f.write(b"x"))
    thread.join()
    manifest = run.manifest()
    assert manifest.extra == {f"k{i}": i for i in range(40)}
    assert manifest.checkpoints == [37, 38, 39]


def test_buffered_records_on_a_remote_store_are_pushed_at_exit(memory_store):
    script = f"""
import atexit, fsspec
paths = []
atexit.register(lambda: print(fsspec.filesystem("memory").cat_file(paths[0]).decode()))
from gpulab.runs import RunStore
run = RunStore({memory_store.url!r}).create("alice")
run.log(1, loss=0.5)  # buffered: never flushed or closed by this script
paths.append(run.folder.path + "/metrics/rank-0.jsonl")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["loss"] == 0.5
