"""On a machine with an NVIDIA GPU: the embedded default finds the real GPUs through NVML
and a 1-GPU server sees exactly its device. Skipped, with the reason printed, elsewhere."""

import subprocess
import sys

import pytest

from gpulab.gpus import NVMLInventory
from gpulab_hub.ports import free_port
from tests.e2e.harness import RunningHub
from tests.e2e.test_gpu_spawns import server_environment, wait_ready, wait_stopped

pytestmark = pytest.mark.e2e

# The CUDA driver API (libcuda, installed with the NVIDIA driver) counts the devices a
# process may use: CUDA_VISIBLE_DEVICES applies, unlike in NVML.
COUNT_CUDA_DEVICES = """
import ctypes
cuda = ctypes.CDLL("libcuda.so.1")
assert cuda.cuInit(0) == 0
count = ctypes.c_int()
assert cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
print(count.value)
"""


@pytest.fixture(scope="module")
def real_gpus():
    if not NVMLInventory.available():
        pytest.skip("no NVIDIA driver/NVML on this machine: the real-GPU spawn runs only there")
    devices = NVMLInventory().devices()
    if not devices:
        pytest.skip("NVML answers but lists no GPU")
    return devices


def test_a_gpu_server_sees_exactly_its_device(real_gpus, tmp_path):
    hub = RunningHub.start(tmp_path / "state", free_port())  # as `make run`: NVML inventory
    try:
        admin = hub.admin_session()
        admin.api("POST", "/users/gpu-user")
        assert admin.api("POST", "/users/gpu-user/server", json={"gpus": 1}).ok
        wait_ready(admin, "gpu-user")
        env = server_environment("gpu-user")
        assert env["CUDA_VISIBLE_DEVICES"] in {gpu.uuid for gpu in real_gpus}
        counted = subprocess.run(
            [sys.executable, "-c", COUNT_CUDA_DEVICES],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert counted.returncode == 0, counted.stderr
        assert counted.stdout.strip() == "1"
        telemetry = NVMLInventory().telemetry([env["CUDA_VISIBLE_DEVICES"]])
        assert telemetry[env["CUDA_VISIBLE_DEVICES"]].memory_used_bytes is not None
        admin.api("DELETE", "/users/gpu-user/server")
        wait_stopped(admin, "gpu-user")
    finally:
        hub.stop()
