"""The whole pipeline on a real two-worker cluster (gpulab.clusters.start, a
``distributed.LocalCluster``) gives what the same calls give in this process."""

import dask
import numpy as np
import pytest

from gpulab import clusters
from gpulab import preprocess as pp


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    registry = clusters.Registry(tmp_path_factory.mktemp("clusters"))
    cluster = clusters.start(workers=2, threads_per_worker=1, registry=registry, quota=None,
                             progress=False)
    client = cluster.client()
    yield client
    client.close()
    cluster.stop()


def _pipeline(ds):
    parts = pp.split(ds, "time", (0.8, 0.2), window=24)
    stats = pp.compute_stats(parts["train"], progress=False)
    train = pp.windows(pp.normalise(parts["train"], stats), "time", 24, 12)
    return stats, train


def test_pipeline_on_the_cluster_equals_the_local_run(client, tmp_path, capsys):
    from distributed import get_task_stream

    path = tmp_path / "data.zarr"
    with dask.config.set(scheduler="threads"):  # the input is written here, not measured
        pp.example_dataset(2000, 64, chunk_bytes="64 kB").to_zarr(path)
    ds = pp.open_dataset(path, chunk_bytes="100 kB")
    assert len(ds.temperature.chunks[0]) > 4  # several tasks to spread over two workers
    with client.as_current():
        with get_task_stream(client) as stream:
            stats, train = _pipeline(ds)
            on_cluster = train.temperature.values
        batches = [b for r in range(2) for b in pp.ShardedBatches(
            pp.stack_variables(train), batch_size=16, rank=r, world_size=2, shuffle=True)]
        pp.compute_stats(ds, ["temperature"], progress=True)
    # The work ran on both workers, not in this process.
    assert len({task["worker"] for task in stream.data}) == 2
    assert "statistics of temperature: done 100%" in capsys.readouterr().err
    local_stats, local_train = _pipeline(ds)  # threads in this process, no client current
    for name in ("temperature", "pressure"):
        for field in ("count", "mean", "std", "min", "max"):
            assert getattr(stats[name], field) == pytest.approx(
                getattr(local_stats[name], field), rel=1e-9)
    np.testing.assert_array_equal(on_cluster, local_train.temperature.values)
    n = local_train.sizes["sample"]
    assert sum(len(b) for b in batches) == n + n % 2  # every sample, padded to 2 ranks
