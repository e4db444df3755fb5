"""The GPU path, on a machine with an NVIDIA GPU: a LocalCUDACluster on the server's one
allocated GPU, whose worker sees exactly that device and runs CuPy on it. Skipped, with
the reason printed (pytest -ra), where there is no GPU or no GPU stack."""

import os

import pytest

from gpulab import clusters
from tests import gpu


@pytest.fixture
def one_gpu(registry, monkeypatch):
    return gpu.one_gpu(monkeypatch, cupy=True)


def _worker_view():
    import cupy

    return {
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "count": cupy.cuda.runtime.getDeviceCount(),
        "sum": float(cupy.arange(1_000_000, dtype=cupy.float64).sum()),
    }


def test_a_cuda_cluster_runs_on_exactly_the_allocated_gpu(one_gpu, registry):
    cluster = clusters.start(workers=1, gpus_per_worker=1, rmm_pool_size="1 GiB",
                             registry=registry, progress=False)
    try:
        assert cluster.gpus == [one_gpu.uuid]
        assert [w["device"] for w in cluster.workers] == [one_gpu.uuid]
        client = cluster.client()
        try:
            [view] = client.run(_worker_view).values()
        finally:
            client.close()
        assert view["visible"].split(",")[0] == one_gpu.uuid
        assert view["count"] == 1
        assert view["sum"] == pytest.approx(999_999 * 1_000_000 / 2)
        # The one GPU is taken: a second GPU cluster is refused, naming the first.
        with pytest.raises(clusters.ClusterLimitError, match="has 1 and 1 is used"):
            clusters.start(workers=1, gpus_per_worker=1, registry=registry, progress=False)
    finally:
        cluster.stop()
