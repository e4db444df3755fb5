"""The CuPy path: the same calls on CuPy-backed data give the CPU's results, and batches
arrive as CUDA tensors. Skipped, with the reason printed, where there is no GPU."""

import numpy as np
import pytest

from gpulab import preprocess as pp
from tests.gpu import one_gpu


def test_without_a_gpu_the_data_stays_numpy_and_asking_for_one_says_why(dataset, monkeypatch):
    monkeypatch.setattr("gpulab.preprocess.gpu.gpu_available", lambda: False)
    assert pp.as_cupy(dataset) is dataset
    with pytest.raises(RuntimeError, match="use_gpu=True but no GPU is visible to CuPy"):
        pp.as_cupy(dataset, use_gpu=True)


@pytest.mark.parametrize("backend", ["cupy", "dask+cupy"])
def test_the_pipeline_on_cupy_equals_the_cpu(dataset, values, monkeypatch, backend):
    one_gpu(monkeypatch, cupy=True)
    pytest.importorskip("cupy_xarray", reason="cupy-xarray is not installed (pip install "
                        "'gpulab[gpu]')")
    import torch

    ds = dataset if backend == "cupy" else dataset.chunk({"time": 37})
    on_gpu = pp.as_cupy(ds)
    assert pp.gpu.is_cupy(on_gpu.temperature.data)
    stats = pp.compute_stats(on_gpu, progress=False)
    cpu_stats = pp.compute_stats(dataset, progress=False)
    for name in values:
        assert stats[name].mean == pytest.approx(cpu_stats[name].mean, rel=1e-6)
        assert stats[name].std == pytest.approx(cpu_stats[name].std, rel=1e-5)
        assert (stats[name].min, stats[name].max) == (cpu_stats[name].min, cpu_stats[name].max)
    for size, stride in ((24, 6), (25, 25)):
        samples = pp.windows(pp.normalise(on_gpu, stats), "time", size, stride)
        expected = pp.windows(pp.normalise(dataset, cpu_stats), "time", size, stride)
        got = samples.temperature.data
        got = got.compute() if hasattr(got, "compute") else got
        np.testing.assert_allclose(got.get(), expected.temperature.values, atol=1e-5)
        batch = next(iter(pp.ShardedBatches(pp.stack_variables(samples), batch_size=8,
                                            rank=0, world_size=1)))
        assert batch.device.type == "cuda" and batch.dtype == torch.float32
        np.testing.assert_allclose(batch.cpu().numpy(),
                                   pp.stack_variables(expected).values[:8], atol=1e-5)
