"""Kernels keep their server's priority: a real ``jupyter server`` started niced (as
gpulab's spawner starts users' servers) starts kernels whose session, not only whose
process, is niced alike (``gpulab-local-provisioner``, made the default by the
environment the embedded default's spawner gives servers; the GPU provisioner builds on
it). Without it, Linux's autogroup scheduling
gives each kernel's session as large a CPU share as the hub's (``gpulab.priority``)."""

from __future__ import annotations

import os

import psutil
import pytest

from gpulab.priority import session_group
from tests.extensions.live_server import LiveServer
from tests.kernels.conftest import Kernels
from tests.waiting import poll

NICENESS = 6


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
        group = session_group(process.pid)
        if group is None:
            print("no autogroup scheduling for this kernel: the process's niceness is all")
            return
        # Its own session (jupyter_client starts kernels with setsid), niced as a whole.
        # Ours may be no autogroup at all (None: the first session, see gpulab.priority).
        assert group.split()[0] != (session_group() or "none").split()[0], (
            "the kernel should lead a session of its own")
        assert group.endswith(f"nice {expected}"), group
    finally:
        kernels.shutdown(kernel_id)
