"""GPU clusters of the server and kernels share one lease book (gpulab.leases).

Real lease files, real LocalClusters and real owner processes. The devices are fake ids
(GPULAB_ALLOCATED_DEVICES="GPU-aaa"), so the GPU cluster is the stand-in of
tests/kernels/cluster_owner.py: a LocalCluster whose worker sees its device in
CUDA_VISIBLE_DEVICES. The same path on a real GPU runs in
tests/kernels/test_cluster_leases.py (skipped without one).
"""

import os
import signal

import psutil
import pytest

from gpulab import clusters
from gpulab.clusters import local
from gpulab.leases import CLUSTER, KERNEL, LeaseBook, LeaseRequest, NoFreeGPU
from tests.clusters.conftest import OwnerProcesses, worker_pids
from tests.kernels import cluster_owner
from tests.waiting import poll

KERNEL_ID = "5e1f2a3b-0000-4000-8000-000000000001"


@pytest.fixture
def book(registry, tmp_path, monkeypatch):
    """A server whose allocation is one fake GPU, as the Jupyter server sees it (not a
    kernel: no GPULAB_SERVER_DEVICES), with its lease book in tmp_path."""
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", "GPU-aaa")
    monkeypatch.delenv("GPULAB_SERVER_DEVICES", raising=False)
    path = tmp_path / "runtime" / "gpulab-kernel-leases.json"
    monkeypatch.setenv("GPULAB_KERNEL_LEASES", str(path))
    monkeypatch.setattr(local, "_build_cuda", cluster_owner.fake_cuda)
    return LeaseBook(path)


def start_gpu_cluster(registry, name="prep"):
    return clusters.start(workers=1, gpus_per_worker=1, name=name, registry=registry,
                          progress=False, owner_kind="server")


def kernel_lease(book, allocated=("GPU-aaa",), share=False):
    """A kernel's lease as the provisioner takes it for notebook work/analysis.ipynb."""
    return book.acquire(KERNEL_ID, LeaseRequest(gpus=1, share=share), list(allocated),
                        kernel_name="gpulab-gpu", session="work/analysis.ipynb")


def _visible() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_gpu_cluster_leases_its_device_and_kernels_are_refused_until_it_stops(
        book, registry):
    cluster = start_gpu_cluster(registry)
    try:
        assert cluster.gpus == ["GPU-aaa"]
        client = cluster.client()
        try:
            assert list(client.run(_visible).values()) == ["GPU-aaa"]
        finally:
            client.close()
        [lease] = book.leases()
        assert (lease.kind, lease.kernel_id, lease.devices, lease.session) == (
            CLUSTER, cluster.id, ["GPU-aaa"], "prep")
        assert lease.pid == os.getpid() and not lease.shared
        # Neither an exclusive nor a sharing kernel gets the cluster's device.
        for share in (False, True):
            with pytest.raises(NoFreeGPU) as refused:
                kernel_lease(book, share=share)
            message = str(refused.value)
            assert f"GPU-aaa held by Dask cluster {cluster.id} ('prep')" in message
            assert "Stop a Dask cluster that holds one" in message
            assert "Shut down a kernel" not in message
        assert [x.kernel_id for x in book.leases()] == [cluster.id]
    finally:
        cluster.stop()
    assert book.leases() == []
    assert kernel_lease(book).devices == ["GPU-aaa"]


def test_a_kernel_holding_the_only_gpu_refuses_a_cluster(book, registry):
    kernel_lease(book)
    with pytest.raises(clusters.ClusterLimitError) as refused:
        start_gpu_cluster(registry)
    error = refused.value
    assert (error.reason, error.limit, error.in_use) == ("gpus", 1, 1)
    assert ("0 of this server's 1 are free: GPU-aaa held by kernel 5e1f2a3b "
            "(analysis.ipynb)") in str(error)
    assert "Shut down a kernel that holds a GPU" in str(error)
    assert "ask for fewer GPU workers" in str(error)
    # Nothing started, nothing recorded, and the kernel's lease is untouched.
    assert registry.records() == []
    assert [(x.kind, x.kernel_id) for x in book.leases()] == [(KERNEL, KERNEL_ID)]
    # A sharing kernel's device is no cluster's either: a cluster holds its devices alone.
    kernel_lease(book, share=True)
    with pytest.raises(clusters.ClusterLimitError, match="GPU-aaa held by kernel 5e1f2a3b"):
        start_gpu_cluster(registry)


def test_a_cluster_takes_the_device_no_kernel_holds(book, registry, monkeypatch):
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", "GPU-aaa,GPU-bbb")
    kernel_lease(book, allocated=("GPU-aaa", "GPU-bbb"))
    cluster = start_gpu_cluster(registry)
    try:
        assert cluster.gpus == ["GPU-bbb"]
        assert {x.kernel_id: x.devices for x in book.leases()} == {
            KERNEL_ID: ["GPU-aaa"], cluster.id: ["GPU-bbb"]}
        # Both devices are held now: a second cluster is refused, naming both holders.
        with pytest.raises(clusters.ClusterLimitError) as refused:
            start_gpu_cluster(registry, name="second")
        message = str(refused.value)
        assert "GPU-aaa held by kernel 5e1f2a3b (analysis.ipynb)" in message
        assert f"GPU-bbb held by Dask cluster {cluster.id} ('prep')" in message
    finally:
        cluster.stop()


def test_a_cluster_in_a_gpu_kernel_uses_the_kernels_lease(book, registry, monkeypatch):
    # As the provisioner narrows a kernel: its lease is its allocation, the server's apart.
    kernel_lease(book, allocated=("GPU-aaa", "GPU-bbb"))
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", "GPU-aaa")
    monkeypatch.setenv("GPULAB_SERVER_DEVICES", "GPU-aaa,GPU-bbb")
    cluster = clusters.start(workers=1, gpus_per_worker=1, registry=registry, progress=False)
    try:
        assert cluster.gpus == ["GPU-aaa"]
        assert [x.kernel_id for x in book.leases()] == [KERNEL_ID]  # no lease of its own
    finally:
        cluster.stop()


def _fails_to_build(spec, devices, common):
    raise RuntimeError("CUDA driver not found")


def test_a_cluster_that_fails_to_start_gives_its_device_back(book, registry, monkeypatch):
    monkeypatch.setattr(local, "_build_cuda", _fails_to_build)
    with pytest.raises(RuntimeError, match="CUDA driver not found"):
        start_gpu_cluster(registry)
    [failed] = clusters.list(registry=registry)
    assert failed.status == "failed"  # listed with its error until dismissed...
    assert book.leases() == []  # ...but its device is free for a kernel at once
    assert kernel_lease(book).devices == ["GPU-aaa"]
    failed.stop()


@pytest.fixture
def owner_process(book):
    """A process that owns a GPU cluster of the server (the Jupyter server, in effect)."""
    owners = OwnerProcesses("tests.kernels.cluster_owner")
    yield lambda name="sidebar": owners.start("1", name)
    owners.close()


def test_stopping_a_cluster_from_another_process_releases_its_lease(
        book, registry, owner_process):
    process, cluster_id = owner_process()
    [lease] = book.leases()
    assert (lease.kind, lease.kernel_id, lease.pid) == (CLUSTER, cluster_id, process.pid)
    clusters.stop(cluster_id, registry=registry)  # as the sidebar does, through the owner
    assert book.leases() == []
    assert process.poll() is None  # the owner goes on


def test_a_killed_owners_lease_is_dropped(book, registry, owner_process):
    process, cluster_id = owner_process()
    client = clusters.connect(cluster_id, registry=registry)
    pids = worker_pids(client)
    client.close()
    with pytest.raises(NoFreeGPU, match=f"held by Dask cluster {cluster_id}"):
        kernel_lease(book)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    # The lease file still names it; the next read drops it, its owner being gone.
    assert cluster_id in book.path.read_text()
    assert book.leases() == []
    assert kernel_lease(book).devices == ["GPU-aaa"]
    poll(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                         != psutil.STATUS_ZOMBIE for p in pids), 30, "orphan workers")
