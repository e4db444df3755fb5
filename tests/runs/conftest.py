"""Fixtures for the run store's tests.

- ``store``: a ``RunStore`` on a fresh local folder (``tmp_path / "runs"``, not created yet).
- ``memory_store``: a ``RunStore`` on a fresh ``memory://`` root (the fsspec path), removed
  afterwards.
- ``all_files(path)``: every file under a local folder (to check nothing was written).
- ``spawn_writer(*args)``: starts ``python -m tests.runs.writer_process ARGS`` (a real
  process to SIGKILL); every one still running is killed at the end of the test.
"""

import os
import subprocess
import sys
import uuid

import fsspec
import pytest

from gpulab.runs import RunStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("GPULAB_RUNS_DIR", raising=False)
    return RunStore(tmp_path / "runs")


@pytest.fixture
def memory_store():
    root = f"memory://gpulab-runs-{uuid.uuid4().hex[:8]}"
    yield RunStore(root)
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def all_files(path):
    return sorted(
        os.path.relpath(os.path.join(folder, name), path)
        for folder, _, names in os.walk(path)
        for name in names
    )


@pytest.fixture
def spawn_writer():
    started = []

    def spawn(*args):
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.runs.writer_process", *map(str, args)],
            cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
        )
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stdin):
            stream.close()
