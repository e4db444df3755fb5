"""Kernels and the sidebar's GPU clusters share the server's devices, in a real `jupyter
server`: a cluster started through the REST API the sidebar calls holds its device in the
lease book, so a GPU kernel is refused with a message naming the cluster, and a cluster is
refused with a message naming the kernel's notebook.

The allocation is one fake device; the server's config (tests/kernels/cluster_owner.py)
builds GPU clusters as LocalClusters whose worker sees that device. On a machine with an
NVIDIA GPU, the last test runs the same with the real device and dask_cuda.
"""

import sys
from pathlib import Path

import pytest

from tests import gpu
from tests.extensions.live_server import LiveServer
from tests.kernels.cluster_owner import SERVER_CONFIG
from tests.kernels.conftest import Kernels, KernelStartFailed
from tests.waiting import poll

REPO = Path(__file__).resolve().parents[2]


def start_gpu_server(root: Path, devices: str, kernelspec_path: Path, *,
                     fake_cuda: bool) -> LiveServer:
    env = {"GPULAB_ALLOCATED_DEVICES": devices, "CUDA_VISIBLE_DEVICES": devices,
           "JUPYTER_PATH": str(kernelspec_path)}
    if fake_cuda:
        config = root / "config"
        config.mkdir(parents=True)
        (config / "jupyter_server_config.py").write_text(SERVER_CONFIG)
        env.update(JUPYTER_CONFIG_DIR=str(config),
                   PYTHONPATH=":".join([str(REPO), *filter(None, sys.path)]))
    return LiveServer.start(root, env)


class Sidebar:
    """The sidebar's cluster calls (extensions/gpulab_jupyterlab/handlers.py)."""

    def __init__(self, kernels: Kernels):
        self.kernels = kernels

    def start(self, name: str):
        return self.kernels.api("POST", "gpulab/clusters",
                                json={"name": name, "workers": 1, "gpus_per_worker": 1})

    def wait_running(self, cluster_id: str) -> dict:
        def running():
            body = self.kernels.api("GET", f"gpulab/clusters/{cluster_id}").json()
            assert body.get("status") != "failed", body
            return body if body.get("status") == "running" else None

        return poll(running, 120, f"cluster {cluster_id} to run", 0.2)

    def stop(self, cluster_id: str) -> None:
        assert self.kernels.api("DELETE", f"gpulab/clusters/{cluster_id}").status_code == 204


@pytest.fixture(scope="module")
def server(tmp_path_factory, kernelspec_path):
    live = start_gpu_server(tmp_path_factory.mktemp("server"), "GPU-aaa", kernelspec_path,
                            fake_cuda=True)
    yield live
    live.stop()


@pytest.fixture
def kernels(server):
    kernels = Kernels(server)
    yield kernels
    for kernel in kernels.api("GET", "api/kernels").json():
        kernels.shutdown(kernel["id"])
    for cluster in kernels.api("GET", "gpulab/clusters").json()["clusters"]:
        Sidebar(kernels).stop(cluster["id"])
    assert kernels.leases() == {}


def test_a_sidebar_cluster_holds_its_gpu_against_kernels(kernels):
    sidebar = Sidebar(kernels)
    answer = sidebar.start("prep")
    assert answer.status_code == 202, answer.text
    cluster = sidebar.wait_running(answer.json()["id"])
    assert cluster["gpus"] == ["GPU-aaa"]
    [lease] = kernels.book.leases()
    assert (lease.kind, lease.kernel_id, lease.pid) == (
        "cluster", cluster["id"], kernels.server.process.pid)

    with pytest.raises(KernelStartFailed) as refused:
        kernels.open_notebook("gpulab-gpu", "train.ipynb")
    message = refused.value.body["message"]  # what JupyterLab's "Error Starting Kernel" shows
    assert f"GPU-aaa held by Dask cluster {cluster['id']} ('prep')" in message
    assert "Stop a Dask cluster that holds one" in message
    answer = kernels.api("POST", "api/kernels", json={"name": "gpulab-gpu"})
    assert answer.status_code == 409 and answer.json()["message"] == message
    assert kernels.api("GET", "api/kernels").json() == []

    sidebar.stop(cluster["id"])
    assert kernels.leases() == {}
    kernel = kernels.open_notebook("gpulab-gpu", "train.ipynb")
    assert kernels.visible_devices(kernel) == "GPU-aaa"


def test_a_kernel_holds_its_gpu_against_the_sidebar(kernels):
    kernel = kernels.open_notebook("gpulab-gpu", "analysis.ipynb")
    answer = Sidebar(kernels).start("prep")
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["reason"] == "gpus" and "traceback" not in body
    assert f"GPU-aaa held by kernel {kernel[:8]} (analysis.ipynb)" in body["message"]
    assert "Shut down a kernel that holds a GPU" in body["message"]
    assert kernels.api("GET", "gpulab/clusters").json()["clusters"] == []
    assert kernels.leases() == {kernel: ["GPU-aaa"]}
    # A CPU cluster needs no device: the sidebar still starts one beside the kernel.
    answer = kernels.api("POST", "gpulab/clusters", json={"name": "cpu", "workers": 1})
    assert answer.status_code == 202, answer.text
    Sidebar(kernels).wait_running(answer.json()["id"])
    assert kernels.leases() == {kernel: ["GPU-aaa"]}


def test_on_a_gpu_the_sidebars_cuda_cluster_and_kernels_share_by_the_lease_book(
        tmp_path, kernelspec_path, monkeypatch):
    device = gpu.one_gpu(monkeypatch, cupy=False)
    live = start_gpu_server(tmp_path / "server", device.uuid, kernelspec_path, fake_cuda=False)
    try:
        kernels, sidebar = Kernels(live), Sidebar(Kernels(live))
        answer = sidebar.start("cuda")
        assert answer.status_code == 202, answer.text
        cluster = sidebar.wait_running(answer.json()["id"])
        assert cluster["gpus"] == [device.uuid]
        with pytest.raises(KernelStartFailed, match="held by Dask cluster"):
            kernels.open_notebook("gpulab-gpu", "train.ipynb")
        sidebar.stop(cluster["id"])
        kernel = kernels.open_notebook("gpulab-gpu", "train.ipynb")
        assert kernels.visible_devices(kernel) == device.uuid
        assert Sidebar(kernels).start("again").status_code == 403
        kernels.shutdown(kernel)
    finally:
        live.stop()
