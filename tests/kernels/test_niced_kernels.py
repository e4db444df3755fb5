"""Kernels keep their server's priority: a real ``jupyter server`` started niced (as
gpulab's spawner starts users' servers) starts kernels whose session, not only whose
process, is niced alike (``gpulab-local-provisioner``, made the default by the
environment the embedded default's spawner gives servers; the GPU provisioner builds on
it). Without it, Linux's autogroup scheduling
gives each kernel's session as large a CPU share as the hub's (``gpulab.priority``)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.extensions.live_server import LiveServer
from tests.kernels.conftest import Kernels
from tests.waiting import poll

NICENESS = 6
AUTOGROUPS = Path("/proc/self/autogroup").exists()


@pytest.fixture(scope="module")
def kernels(tmp_path_factory, kernelspec_path):
    server = LiveServer.start(
        tmp_path_factory.mktemp("niced"),
        {"JUPYTER_PATH": str(kernelspec_path), "GPULAB_ALLOCATED_DEVICES": "",
         # What jupyterhub_config.py's Spawner.environment gives users' servers (its test
         # checks it there).
         "JUPYTER_DEFAULT_PROVISIONER_NAME": "gpulab-local-provisioner"},
        niceness=NICENESS,
    )
    yield Kernels(server)
    server.stop()


def kernel_process(kernels: Kernels, kernel_id: str) -> psutil.Process:
    """The ipykernel process of ``kernel_id`` (its connection file names the id)."""

    def find():
        for child in psutil.Process(kernels.server.process.pid).children(recursive=True):
            try:
                if any(kernel_id in part for part in child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    return poll(find, timeout=60, what=f"the process of kernel {kernel_id}")


@pytest.mark.parametrize("kernelspec", ["python3", "gpulab-cpu"])
def test_a_kernel_and_its_session_get_the_servers_niceness(kernels, kernelspec):
    kernel_id = kernels.open_notebook(kernelspec)
    try:
        process = kernel_process(kernels, kernel_id)
        expected = min(19, os.nice(0) + NICENESS)
        assert process.nice() == expected
        if not AUTOGROUPS:
            print("no autogroup scheduling on this kernel: the process's niceness is all")
            return
        # Its own session (jupyter_client starts kernels with setsid), niced as a whole.
        group = Path(f"/proc/{process.pid}/autogroup").read_text().strip()
        own = Path("/proc/self/autogroup").read_text().split()[0]
        assert group.split()[0] != own, "the kernel should lead a session of its own"
        assert group.endswith(f"nice {expected}"), group
    finally:
        kernels.shutdown(kernel_id)
