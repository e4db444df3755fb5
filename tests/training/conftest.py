import pytest

from gpulab import clusters
from gpulab.runs import RunStore


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two CPU workers, one process each (one rank per worker)."""
    registry = clusters.Registry(tmp_path_factory.mktemp("clusters"))
    started = clusters.start(workers=2, threads_per_worker=1, registry=registry, quota=None,
                             progress=False)
    client = started.client()
    yield client
    client.close()
    started.stop()


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")
