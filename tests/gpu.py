"""The GPU tests' common start: skip, with the reason printed (pytest -ra), where there is
no NVIDIA GPU or no GPU stack; else the first GPU, given to this test as the spawner gives
a one-GPU allocation to a server."""

import pytest

from gpulab.gpus import NVMLInventory


def one_gpu(monkeypatch, *, cupy: bool = False):
    if not NVMLInventory.available():
        pytest.skip("no NVIDIA GPU here (NVML does not answer): the GPU path runs on a GPU "
                    "machine")
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (pip install "
                        "'gpulab[gpu]')")
    if cupy:
        pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'gpulab[gpu]')")
    gpu = NVMLInventory().devices()[0]
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", gpu.uuid)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu.uuid)
    return gpu
