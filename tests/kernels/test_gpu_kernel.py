"""The GPU kernelspec on a real GPU: PyTorch in the kernel sees exactly its leased device.

Skipped, with the reason printed (pytest -ra), without an NVIDIA GPU or a CUDA build of
torch. With two or more GPUs a second kernel sees another one.
"""

import json

import pytest

from gpulab.gpus import NVMLInventory
from tests.kernels.conftest import Kernels, start_server

SEEN_BY_TORCH = """\
import json, torch
print(json.dumps({"count": torch.cuda.device_count(),
                  "uuid": str(torch.cuda.get_device_properties(0).uuid)}))
"""


def gpus_or_skip() -> list[str]:
    if not NVMLInventory.available():
        pytest.skip("no NVIDIA GPU here (NVML does not answer): the GPU kernel runs on a GPU "
                    "machine")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} is not a CUDA build or sees no GPU")
    return [gpu.uuid for gpu in NVMLInventory().devices()][:2]


def test_torch_sees_only_the_leased_gpu(tmp_path, kernelspec_path):
    devices = gpus_or_skip()
    live = start_server(tmp_path, ",".join(devices), kernelspec_path)
    try:
        kernels = Kernels(live)
        seen = []
        for _ in devices:
            kernel = kernels.open_notebook("gpulab-gpu")
            leased = kernels.leases()[kernel]
            assert kernels.visible_devices(kernel) == leased[0]
            torch_view = json.loads(kernels.run(kernel, SEEN_BY_TORCH)["stdout"])
            assert torch_view["count"] == 1
            # NVML says "GPU-<uuid>" (or "MIG-<uuid>"), torch the bare uuid.
            assert leased[0].split("-", 1)[1] == torch_view["uuid"]
            seen.append(torch_view["uuid"])
        assert len(set(seen)) == len(devices)
    finally:
        live.stop()
