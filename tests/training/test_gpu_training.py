"""The GPU path, where there is an NVIDIA GPU (skipped with the reason elsewhere): nccl on
a Dask-CUDA cluster of the one GPU, a real model trains, and the run records the GPU's
telemetry and energy."""

import pytest

from gpulab import clusters, training
from gpulab.runs import RunStore
from tests.gpu import one_gpu


@pytest.fixture
def gpu_cluster(tmp_path, monkeypatch):
    gpu = one_gpu(monkeypatch)
    cluster = clusters.start(workers=1, gpus_per_worker=1, quota=None, progress=False,
                             registry=clusters.Registry(tmp_path / "clusters"))
    client = cluster.client()
    yield client, gpu
    client.close()
    cluster.stop()


def on_gpu(ctx):
    import torch

    assert ctx.backend == "nccl" and ctx.device.type == "cuda"
    model = torch.nn.Linear(256, 256).to(ctx.device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
    optimiser = torch.optim.SGD(ddp.parameters(), lr=0.01)
    for step in range(200):
        x = torch.randn(512, 256, device=ctx.device)
        loss = (ddp(x) - x).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ctx.log(step, loss=loss.item(), samples=512)
    return float(loss.item())


def test_nccl_training_on_the_gpu_records_telemetry(gpu_cluster, tmp_path):
    client, gpu = gpu_cluster
    store = RunStore(tmp_path / "runs")
    loss = training.run(on_gpu, client, store=store, name="gpu", progress=False,
                        telemetry_interval=0.2)
    assert loss < 1.0
    [manifest] = [m for m in store.list_runs(_owner()) if m.name == "gpu"]
    records, _ = store.read_metrics(manifest.owner, manifest.id)
    readings = [r for r in records if "gpu_uuid" in r]
    assert readings and {r["gpu_uuid"] for r in readings} == {gpu.uuid}
    assert any(r.get("gpu_energy_wh") is not None for r in readings)


def _owner():
    import getpass
    import os

    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
