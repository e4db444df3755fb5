"""Real LocalClusters through gpulab.clusters: start, scale, list, connect, stop, limits,
and clusters owned by another process (as a notebook kernel owns them)."""

import os
import signal

import psutil
import pytest

from gpulab import clusters
from tests.clusters.conftest import OwnerProcesses, worker_pids
from tests.waiting import poll


def test_start_scale_stop_a_local_cluster(registry, capsys):
    cluster = clusters.start(workers=2, name="prep", registry=registry)
    assert cluster.status == "running"
    assert len(cluster.workers) == 2
    # Progress was shown while it started (stderr outside a notebook).
    assert "cluster 'prep': running, 2/2 workers ready" in capsys.readouterr().err
    client = cluster.client()
    try:
        assert client.submit(lambda x: x * 2, 21).result() == 42
        assert all(w["address"].startswith("tls://127.0.0.1:") for w in cluster.workers)
        pids = worker_pids(client)
        assert len(pids) == 2 and os.getpid() not in pids  # one process per worker

        cluster.scale(3)
        poll(lambda: len(cluster.refresh().workers) == 3, what="a third worker")
        assert cluster.to_json()["workers_requested"] == 3
        cluster.scale(1)
        poll(lambda: len(cluster.refresh().workers) == 1, what="scale down to 1")
        pids = worker_pids(client) | pids
    finally:
        client.close()
    cluster.stop()
    assert clusters.list(registry=registry) == []
    assert not registry.path(cluster.id).exists()
    poll(lambda: not any(psutil.pid_exists(p) for p in pids), 15, "workers to exit")


def test_the_public_json_has_no_credentials_and_a_proxied_dashboard(registry):
    cluster = clusters.start(workers=1, registry=registry, progress=False)
    try:
        public = cluster.to_json()
        assert "security" not in public and "BEGIN" not in str(public)
        assert public["dashboard_link"].startswith("proxy/")
        assert public["dashboard_link"].endswith("/status")
        assert public["owner"]["pid"] == os.getpid()
        # The record itself holds the TLS credentials, readable by this account only.
        assert "BEGIN CERTIFICATE" in registry.path(cluster.id).read_text()
        assert registry.path(cluster.id).stat().st_mode & 0o077 == 0
        assert registry.folder.stat().st_mode & 0o077 == 0
    finally:
        cluster.stop()


def test_a_client_without_the_clusters_certificate_cannot_connect(registry):
    from distributed import Client
    from distributed.security import Security

    cluster = clusters.start(workers=1, registry=registry, progress=False)
    try:
        # Another account's process, with a certificate of its own: the handshake fails.
        with pytest.raises((OSError, TimeoutError)):
            Client(cluster.scheduler_address, security=Security.temporary(), timeout=3)
        # ...and plain TCP to the TLS port gets nowhere either.
        plain = cluster.scheduler_address.replace("tls://", "tcp://")
        with pytest.raises((OSError, TimeoutError)):
            Client(plain, timeout=3)
    finally:
        cluster.stop()


def test_over_the_worker_limit_is_refused_with_limit_and_use(registry, monkeypatch):
    monkeypatch.setenv("GPULAB_MAX_DASK_WORKERS", "3")
    first = clusters.start(workers=2, name="prep", registry=registry, progress=False)
    try:
        with pytest.raises(clusters.ClusterLimitError) as refused:
            clusters.start(workers=2, name="train", registry=registry, progress=False)
        message = str(refused.value)
        assert "asks for 2 but your limit is 3 at once and 2 are in use" in message
        assert "cluster 'prep': 2" in message
        assert (refused.value.reason, refused.value.limit, refused.value.in_use) == (
            "max_dask_workers", 3, 2)
        # Nothing started: still one cluster, one record.
        assert [c.name for c in clusters.list(registry=registry)] == ["prep"]
        assert len(registry.records()) == 1
        # Scaling meets the same limit.
        with pytest.raises(clusters.ClusterLimitError, match="asks for 4 but your limit is 3"):
            first.scale(4)
        first.scale(3)
    finally:
        first.stop()
    # Its workers are back in the allowance.
    clusters.start(workers=3, registry=registry, progress=False).stop()


def test_a_gpu_cluster_on_a_cpu_server_is_refused(registry):
    with pytest.raises(clusters.ClusterLimitError, match="this server has none") as refused:
        clusters.start(workers=1, gpus_per_worker=1, registry=registry, progress=False)
    assert refused.value.reason == "gpus"
    assert registry.records() == []


def test_gpu_workers_take_free_devices_of_the_allocation_only(registry, monkeypatch):
    from gpulab.clusters.limits import choose_devices
    from gpulab.clusters.spec import ClusterSpec

    allocated = ["GPU-a", "GPU-b", "GPU-c"]
    others = [{"id": "x", "name": "prep", "gpus": ["GPU-b"]}]
    spec = ClusterSpec.build(workers=2, gpus_per_worker=1)
    assert choose_devices(spec, allocated, others) == ["GPU-a", "GPU-c"]
    with pytest.raises(clusters.ClusterLimitError, match="has 3 and 1 is used") as refused:
        choose_devices(ClusterSpec.build(workers=3, gpus_per_worker=1), allocated, others)
    assert "cluster 'prep': 1" in str(refused.value)
    # The server's allocation, as the spawner passes it, wins over CUDA_VISIBLE_DEVICES.
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", "GPU-a, GPU-b")
    assert clusters.allocated_devices() == ["GPU-a", "GPU-b"]


def test_a_gpu_cluster_without_dask_cuda_fails_with_how_to_fix(registry, monkeypatch):
    pytest.importorskip("distributed")
    try:
        import dask_cuda  # noqa: F401
        pytest.skip("dask_cuda is installed here: the GPU test covers this path")
    except ImportError:
        pass
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", "GPU-a")
    with pytest.raises(RuntimeError, match=r"pip install 'gpulab\[gpu\]'"):
        clusters.start(workers=1, gpus_per_worker=1, registry=registry, progress=False)
    # The failure stays listed with its error until dismissed; its device is free again.
    [failed] = clusters.list(registry=registry)
    assert failed.status == "failed" and "dask-cuda" in failed.error
    failed.stop()
    assert clusters.list(registry=registry) == []


@pytest.fixture
def owner_process(registry):
    """Start a cluster in another process (a kernel, in effect); yields (process, id)."""
    owners = OwnerProcesses("tests.clusters.owner_process")
    yield lambda workers=1, name="from-a-kernel": owners.start(str(workers), name)
    owners.close()


def test_a_cluster_started_elsewhere_is_listed_connected_scaled_and_stopped(
        registry, owner_process):
    process, cluster_id = owner_process(workers=1)
    [listed] = clusters.list(registry=registry)
    assert (listed.id, listed.name, listed.status) == (cluster_id, "from-a-kernel", "running")
    assert listed.to_json()["owner"]["pid"] == process.pid

    client = clusters.connect(registry=registry)  # the only cluster: no id needed
    try:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        clusters.scale(cluster_id, 2, registry=registry)  # through the owner's scheduler
        poll(lambda: len(clusters.get(cluster_id, registry=registry).workers) == 2,
                   what="the owner to scale to 2")
        pids = worker_pids(client)
    finally:
        client.close()
    clusters.stop(cluster_id, registry=registry)
    assert clusters.list(registry=registry) == []
    poll(lambda: not any(psutil.pid_exists(p) for p in pids), 15, "workers to exit")
    assert process.poll() is None  # the owner itself goes on


def test_a_killed_owner_leaves_no_workers_and_its_record_is_dropped(registry, owner_process):
    process, cluster_id = owner_process(workers=2)
    client = clusters.connect(cluster_id, registry=registry)
    pids = worker_pids(client)
    client.close()
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    # Dask's workers watch their parent: they exit with it, no orphans.
    poll(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                               != psutil.STATUS_ZOMBIE for p in pids), 30, "orphan workers")
    assert registry.records(), "the stale record is still on disk"
    assert clusters.list(registry=registry) == []  # ...and dropped at the next look
    assert registry.records() == []


def test_unknown_or_malformed_ids_are_not_found(registry):
    for bad in ("nope", "../../etc/passwd", "", "a" * 12):
        with pytest.raises(clusters.ClusterNotFound):
            clusters.get(bad, registry=registry)
    with pytest.raises(clusters.SpecError, match="from 0 to 512"):
        clusters.scale("a" * 12, -1, registry=registry)
