import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from gpulab import clusters

CLEAN_ENV = ("GPULAB_QUOTA_URL", "JUPYTERHUB_API_TOKEN", "GPULAB_MAX_DASK_WORKERS",
             "GPULAB_ALLOCATED_DEVICES", "JUPYTERHUB_SERVER_NAME")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A private registry folder, no hub in the environment, and no cluster left behind."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    # No GPUs unless a test gives some: CUDA then sees no device (as on a CPU server).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    folder = tmp_path / "clusters"
    monkeypatch.setenv("GPULAB_CLUSTERS_DIR", str(folder))
    # GPU clusters lease their devices (gpulab.leases): in this test's folder, not the
    # user's Jupyter runtime folder.
    monkeypatch.setenv("GPULAB_KERNEL_LEASES", str(tmp_path / "leases.json"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield clusters.Registry(folder)
    left = clusters.close_owned()
    assert left == 0, f"the test left {left} cluster(s) running"
    # Worker processes of stopped clusters are gone (a moment for them to exit).
    new = [p for p in psutil.Process().children(recursive=True)
           if p.pid not in before and not _helper(p)]
    psutil.wait_procs(new, timeout=10)
    left = [p.cmdline() for p in new if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"orphan worker processes: {left}"


def _helper(process):
    # multiprocessing's resource tracker: one per Python process, by design long-lived.
    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return True


def worker_pids(client):
    """The OS pid of each worker process of a cluster."""
    return set(client.run(os.getpid).values())


class OwnerProcesses:
    """Processes that each start a cluster (``python -m MODULE ARGS...`` prints its id)
    and own it until their stdin closes: a kernel or a Jupyter server, in effect."""

    def __init__(self, module: str):
        self.module = module
        self.started: list[subprocess.Popen] = []

    def start(self, *args: str) -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [sys.executable, "-m", self.module, *args], cwd=Path(__file__).parents[2],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.started.append(process)
        cluster_id = process.stdout.readline().strip()
        assert cluster_id, "the owner process failed to start its cluster"
        return process, cluster_id

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.stdin.close()
                process.wait(30)
