"""Checkpoints on real files: keep-last-K, formats and loaders, temp files never counted."""

import os
import pickle
import subprocess
import sys
import textwrap
import time

import pytest

from gpulab.runs import InvalidRunInput, RunStore
from tests.runs.conftest import REPO


def test_keep_the_last_k_and_find_the_latest(store):
    run = store.create("alice")
    assert run.latest_checkpoint() is None and run.load_latest() is None
    for step in (10, 20, 30, 40, 50):
        saved = run.save_checkpoint(step, {"step": step})
        assert saved.step == step and saved.url.endswith(f"/checkpoints/step-{step}.ckpt")
    assert [c.step for c in run.checkpoints()] == [30, 40, 50]
    assert run.manifest().checkpoints == [30, 40, 50]
    assert run.load_latest() == (50, {"step": 50})
    # the same step again replaces it (a resumed run re-saving)
    run.save_checkpoint(50, {"step": 50, "again": True})
    assert run.load_latest() == (50, {"step": 50, "again": True})
    # steps sort as numbers, not text
    run.save_checkpoint(100, {"step": 100})
    assert run.latest_checkpoint().step == 100


def test_keep_is_configurable_and_none_keeps_all(tmp_path):
    run = RunStore(tmp_path, keep_checkpoints=None).create("alice")
    for step in range(6):
        run.save_checkpoint(step, step)
    assert len(run.checkpoints()) == 6
    one = RunStore(tmp_path, keep_checkpoints=1).create("alice")
    for step in range(3):
        one.save_checkpoint(step, step)
    assert [c.step for c in one.checkpoints()] == [2]
    with pytest.raises(InvalidRunInput, match="keep_checkpoints must be >= 1, not 0"):
        RunStore(tmp_path, keep_checkpoints=0).create("alice")


def test_objects_are_saved_with_torch_when_it_is_importable(store):
    torch = pytest.importorskip("torch")
    run = store.create("alice")
    saved = run.save_checkpoint(1, {"weights": torch.arange(5.0), "step": 1})
    with saved.open() as f:
        assert f.read(4) == b"PK\x03\x04"  # torch.save's zip format
    step, state = run.load_latest(map_location="cpu")
    assert step == 1 and state["step"] == 1 and state["weights"].tolist() == [0, 1, 2, 3, 4]


def test_without_torch_objects_are_pickled_and_torch_is_never_imported_early(store):
    run = store.create("alice")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import gpulab.runs
        from gpulab.runs import Run
        run = Run.attach({run.url!r})
        run.save_checkpoint(3, {{"weights": [1.0, 2.0], "step": 3}})
        print(run.load_latest())
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, {'weights': [1.0, 2.0], 'step': 3})"
    with run.latest_checkpoint().open() as f:
        assert f.read(1) == b"\x80"  # pickle
    assert run.load_latest() == (3, {"weights": [1.0, 2.0], "step": 3})
    # and importing the run store imports no torch
    check = "import sys, gpulab.runs; print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
    assert imported.stdout.strip() == "False", imported.stderr


def test_a_writer_callback_and_a_loader(store):
    run = store.create("alice")
    run.save_checkpoint(7, writer=lambda f: f.write(b"my own format"))
    assert run.latest_checkpoint().size() == len(b"my own format")
    assert run.load_latest(loader=lambda f: f.read()) == (7, b"my own format")
    with pytest.raises(ValueError, match="neither torch.save nor pickle data: pass loader="):
        run.load_latest()
    run.save_checkpoint(8, writer=lambda f: pickle.dump({"by": "hand"}, f, protocol=5))
    assert run.load_latest() == (8, {"by": "hand"})  # recognised as pickle
    with pytest.raises(InvalidRunInput, match="with a state object or writer=, not both"):
        run.save_checkpoint(9, {"x": 1}, writer=lambda f: None)
    with pytest.raises(InvalidRunInput, match="with a state object or writer=, not both"):
        run.save_checkpoint(9)
    with pytest.raises(InvalidRunInput, match="step must be >= 0, not -1"):
        run.save_checkpoint(-1, {})


def test_a_writer_that_raises_leaves_the_previous_checkpoint(store):
    run = store.create("alice")
    run.save_checkpoint(1, {"ok": 1})

    def broken(f):
        f.write(b"x" * 1000)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.save_checkpoint(2, writer=broken)
    assert run.load_latest() == (1, {"ok": 1})
    assert os.listdir(os.path.join(run.folder.path, "checkpoints")) == ["step-1.ckpt"]


def test_temp_files_are_never_checkpoints_and_stale_ones_are_cleaned(store):
    run = store.create("alice")
    run.save_checkpoint(1, {"ok": 1})
    folder = os.path.join(run.folder.path, "checkpoints")
    for name in (".step-2.ckpt.0badf00d.tmp", "step-3.ckpt.partial", "step-x.ckpt",
                 "step-4.ckpt~", "notes.txt"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"half")
    assert [c.step for c in run.checkpoints()] == [1]
    stale = os.path.join(folder, ".step-2.ckpt.0badf00d.tmp")
    fresh = os.path.join(folder, ".step-9.ckpt.0000beef.tmp")
    open(fresh, "wb").close()  # a save in progress elsewhere: recent, left alone
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    run.save_checkpoint(5, {"ok": 5})
    assert not os.path.exists(stale) and os.path.exists(fresh)
    assert [c.step for c in run.checkpoints()] == [1, 5]
