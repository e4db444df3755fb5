"""Crash safety with real processes killed by SIGKILL, and the torn lines they leave.

Metrics: a writer killed mid-append loses at most the record it was writing; the file
stays readable, no torn record is returned, and appending after the crash reads clean.
Checkpoints: a write killed midway leaves the previous checkpoint as the latest, loadable.
"""

import os
import random
import signal

from gpulab.runs import Run
from gpulab.runs.metrics import read_file

RECORD_BYTES = 256 * 1024
# About 1 kill in 10 lands inside a record's write (the rest between records); more
# rounds for a longer soak: GPULAB_TEST_KILL_ROUNDS=100.
KILL_ROUNDS = int(os.environ.get("GPULAB_TEST_KILL_ROUNDS", "10"))


def kill(process):
    process.send_signal(signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL


def metrics_path(run, rank=0):
    return os.path.join(run.folder.path, "metrics", f"rank-{rank}.jsonl")


def test_a_metrics_writer_killed_mid_append_loses_at_most_that_record(store, spawn_writer):
    run = store.create("alice")
    rng = random.Random()
    expected = 0  # the next step a writer starts at: every earlier one was read back
    torn_tails = 0
    cursor = None
    for _ in range(KILL_ROUNDS):
        writer = spawn_writer("metrics", run.url, 0, expected, RECORD_BYTES)
        assert writer.stdout.readline().strip() == "READY"
        # let it write for a random moment (a record every ~0.8 ms, ~0.1 ms of it in write)
        spin_until = os.times().elapsed + rng.uniform(0.002, 0.04)
        while os.times().elapsed < spin_until:
            pass
        kill(writer)
        with open(metrics_path(run), "rb") as f:
            data = f.read()
        torn_tails += not data.endswith(b"\n")

        records, cursor = run.read_metrics(cursor)
        steps = [r["step"] for r in records]
        assert steps == list(range(expected, expected + len(steps))), "a gap or a duplicate"
        assert len(steps) >= 1  # the READY record at least
        for record in records:  # no torn record comes back
            assert len(record["blob"]) == RECORD_BYTES and record["check"] == record["step"] * 7
        # the cursor stops at the end of the last complete line, never inside a record
        assert data[: cursor["0"]].endswith(b"\n")
        assert cursor["0"] == data.rfind(b"\n") + 1
        expected += len(steps)

    # after the crashes, a clean append: the torn tail (if any) is ended, the record reads
    run.log(expected, rank=0, after="crash")
    run.close()
    records, cursor = run.read_metrics(cursor)
    assert [(r["step"], r.get("after")) for r in records] == [(expected, "crash")]
    everything, _ = run.read_metrics()
    assert [r["step"] for r in everything] == list(range(expected + 1))
    print(f"{torn_tails} of {KILL_ROUNDS} kills tore a record")  # shown with -s


def test_a_torn_tail_is_held_back_then_skipped_once_a_writer_ends_it(store):
    run = store.create("alice")
    run.log(0, loss=1.0)
    run.log(1, loss=0.5)
    run.close()
    path = metrics_path(run)
    size = os.path.getsize(path)
    with open(path, "ab") as f:  # what a writer killed mid-record leaves
        f.write(b'{"step":2,"time":1.0,"rank":0,"attempt":0,"loss":0.2')
    records, cursor = run.read_metrics()
    assert [r["step"] for r in records] == [0, 1] and cursor == {"0": size}
    assert run.read_metrics(cursor) == ([], cursor)  # held back, not consumed
    again = Run.attach(run.url)
    again.log(3, loss=0.1)  # its writer ends the torn line first
    again.close()
    records, cursor = run.read_metrics(cursor)
    assert [r["step"] for r in records] == [3]
    assert cursor == {"0": os.path.getsize(path)}


def test_torn_and_garbage_lines_in_the_middle_are_skipped(store):
    run = store.create("alice")
    run.log(0, loss=1.0)
    run.close()
    path = metrics_path(run)
    with open(path, "ab") as f:
        # a record appended to a torn fragment with no newline between (an older writer)
        f.write(b'{"step":1,"time":1.0,"ra{"step":2,"time":2.0,"rank":0,"attempt":0}\n')
        f.write(b"\x00\x00\x00\x00\n")  # zeros, as after a power cut
        f.write(b"not json at all\n")
        f.write(b'{"step":"3","time":3.0,"rank":0}\n')  # not a record
        f.write(b"[1, 2]\n\n")
        f.write(b'{"step":4,"time":4.0,"rank":0,"attempt":0,"ok":true}\n')
    records, cursor = run.read_metrics()
    assert [r["step"] for r in records] == [0, 2, 4]
    assert cursor == {"0": os.path.getsize(path)}
    # the same from every offset that ends a line: exactly the records after it
    with open(path, "rb") as f:
        data = f.read()
    ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    for offset in ends:
        tail, following = read_file(run.folder.child("metrics"), "rank-0.jsonl", offset)
        assert following == len(data)
        assert [r["step"] for r in tail] == [s for s, end in ((2, ends[1]), (4, ends[-1]))
                                             if end > offset]


def test_a_checkpoint_write_killed_midway_leaves_the_previous_one(store, spawn_writer):
    run = store.create("alice")
    run.save_checkpoint(100, {"step": 100, "weights": [1.0] * 1000})
    writer = spawn_writer("checkpoint", run.url, 200, 50)  # 50 MiB, killed after half
    assert writer.stdout.readline().strip() == "HALF"
    kill(writer)
    folder = os.path.join(run.folder.path, "checkpoints")
    temps = [n for n in os.listdir(folder) if n != "step-100.ckpt"]
    assert len(temps) == 1 and temps[0].startswith(".step-200.ckpt.")  # the half-written one
    assert os.path.getsize(os.path.join(folder, temps[0])) > 20 << 20
    latest = run.latest_checkpoint()
    assert latest.step == 100
    assert run.load_latest() == (100, {"step": 100, "weights": [1.0] * 1000})
    assert run.manifest().checkpoints == [100]
    # the run goes on: the next save works and the temp file is still not a checkpoint
    run.save_checkpoint(300, {"step": 300})
    assert [c.step for c in run.checkpoints()] == [100, 300]


def test_checkpoint_writers_killed_at_random_moments(store, spawn_writer):
    run = store.create("alice")
    rng = random.Random(11)
    for attempt in range(3):
        start = 1000 * (attempt + 1)
        writer = spawn_writer("checkpoints", run.url, start, 8)  # 8 MiB objects in a loop
        assert writer.stdout.readline().strip() == "READY"
        spin_until = os.times().elapsed + rng.uniform(0.0, 0.15)
        while os.times().elapsed < spin_until:
            pass
        kill(writer)
        step, state = run.load_latest()  # whatever is newest is complete and loads
        assert step >= start and state["step"] == step
        assert state["payload"] == b"\x07" * (8 << 20)
        assert len(run.checkpoints()) <= 3 + 1  # a kill between rename and prune keeps one more
