"""GpulabKubeSpawner builds each GPU profile's pod: the real KubeSpawner manifest code
after a real admission by the ledger; only the call to the Kubernetes API is left out
(``ManifestOnly._start``). See docs/deploy-kubernetes.md."""

from __future__ import annotations

import asyncio

import pytest
from tornado.web import HTTPError

from gpulab_hub.kube import GpulabKubeSpawner


class ManifestOnly(GpulabKubeSpawner):
    """GpulabKubeSpawner up to the pod manifest: KubeSpawner's ``_start`` would send it to
    the API server; this keeps it."""

    manifest = None

    async def _start(self):
        await self.load_user_options()  # KubeSpawner's own order: options, then the pod
        self.manifest = await self.get_pod_manifest()
        return ("127.0.0.1", 8888)


TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def kube_config(quota_config):
    c = quota_config
    c.KubeSpawner.image = "registry.example.org/gpulab-singleuser:1.0"
    c.KubeSpawner.node_selector = {"hub.jupyter.org/node-purpose": "user"}
    c.KubeSpawner.volumes = [
        {"name": "runs", "persistentVolumeClaim": {"claimName": "gpulab-runs"}}
    ]
    c.KubeSpawner.volume_mounts = [{"name": "runs", "mountPath": "/srv/gpulab/runs"}]
    c.GpulabKubeSpawner.profile_resources = {
        "cpu": {"mem_limit": "4G", "cpu_limit": 2},
        "*": {
            "mem_limit": "32G",
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "tolerations": [TOLERATION],
        },
    }
    return c


def spawn(make_spawner, name, options, groups=()):
    async def run():
        spawner = make_spawner(ManifestOnly, name, groups=groups, options=options)
        await spawner.start()
        return spawner

    return asyncio.run(run())


def container(spawner):
    return spawner.manifest.spec.containers[0]


def env_of(spawner):
    return {e.name: e.value for e in container(spawner).env}


@pytest.mark.parametrize(
    ("options", "groups", "limits"),
    [
        ({"profile": "1-gpu"}, (), {"nvidia.com/gpu": "1"}),
        ({"profile": "2-gpus"}, (), {"nvidia.com/gpu": "2"}),
        ({"gpus": 2}, (), {"nvidia.com/gpu": "2"}),
        ({"profile": "mig-1g.10gb"}, ("students",), {"nvidia.com/mig-1g.10gb": "1"}),
    ],
)
def test_a_gpu_profile_becomes_the_pods_gpu_limit_env_volumes_and_placement(
    kube_config, make_spawner, options, groups, limits
):
    spawner = spawn(make_spawner, "ada", options, groups)
    granted = spawner.quota.ledger.find_open("ada", "")
    resources = container(spawner).resources
    gpu_limits = {k: v for k, v in resources.limits.items() if k.startswith("nvidia.com/")}
    assert gpu_limits == limits
    assert resources.limits["memory"] == 32 * 2**30  # mem_limit "32G", in bytes
    env = env_of(spawner)
    # The device plugin picks the GPU: the hub's slot ids are no CUDA device.
    assert "CUDA_VISIBLE_DEVICES" not in env and "GPULAB_ALLOCATED_DEVICES" not in env
    assert env["GPULAB_LEDGER_SLOTS"] == ",".join(granted.device_uuids)
    assert env["GPULAB_GPUS"] == str(len(granted.device_uuids)) == str(sum(
        int(v) for v in limits.values()))
    assert env["GPULAB_ALLOCATION_ID"] == str(granted.id)
    assert env["GPULAB_QUOTA_URL"] == "http://hub:9123/services/gpulab-quota/"
    assert env["GPULAB_RUNS_DIR"] == "/srv/gpulab/runs"
    pod = spawner.manifest.spec
    assert pod.node_selector == {
        "hub.jupyter.org/node-purpose": "user",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    }
    tolerations = [
        {"key": t.key, "operator": t.operator, "effect": t.effect} for t in pod.tolerations
    ]
    assert TOLERATION in tolerations
    assert [v.name for v in pod.volumes if v.name == "runs"] == ["runs"]
    mounts = {m.name: m.mount_path for m in container(spawner).volume_mounts}
    assert mounts["runs"] == "/srv/gpulab/runs"
    assert container(spawner).image == "registry.example.org/gpulab-singleuser:1.0"


def test_a_cpu_pod_asks_for_no_gpu_and_gets_its_own_limits(kube_config, make_spawner):
    spawner = spawn(make_spawner, "bo", {"profile": "cpu"})
    resources = container(spawner).resources
    assert not [k for k in resources.limits if k.startswith("nvidia.com/")]
    assert resources.limits["memory"] == 4 * 2**30 and float(resources.limits["cpu"]) == 2
    assert spawner.manifest.spec.node_selector == {"hub.jupyter.org/node-purpose": "user"}
    assert env_of(spawner)["GPULAB_GPUS"] == "0"


def test_a_request_over_the_policy_builds_no_pod_and_holds_nothing(kube_config, make_spawner):
    async def run():
        spawner = make_spawner(ManifestOnly, "cy", options={"profile": "4-gpus"})
        with pytest.raises(HTTPError) as refused:
            await spawner.start()
        return spawner, refused.value

    spawner, error = asyncio.run(run())
    assert error.status_code == 403
    assert "2 GPUs" in error.jupyterhub_message
    assert spawner.manifest is None
    assert spawner.quota.ledger.find_open("cy", "") is None


def test_a_student_cannot_ask_for_a_whole_gpu(kube_config, make_spawner):
    async def run():
        spawner = make_spawner(ManifestOnly, "stu", groups=["students"],
                               options={"profile": "1-gpu"})
        with pytest.raises(HTTPError) as refused:
            await spawner.start()
        return spawner, refused.value

    spawner, error = asyncio.run(run())
    assert error.status_code == 400
    assert "profile '1-gpu' is not offered" in error.jupyterhub_message
    assert spawner.manifest is None


def test_kubespawners_own_profile_list_is_refused(kube_config, make_spawner):
    kube_config.GpulabKubeSpawner.profile_list = [{"display_name": "x"}]

    async def run():
        make_spawner(ManifestOnly, "dee")

    with pytest.raises(Exception, match="profile_list must stay empty"):
        asyncio.run(run())


def test_an_unknown_profile_setting_is_named(kube_config, make_spawner):
    kube_config.GpulabKubeSpawner.profile_resources = {"1-gpu": {"gpu_memory": "80G"}}

    async def run():
        make_spawner(ManifestOnly, "eve")

    with pytest.raises(Exception, match=r"profile_resources\['1-gpu'\] has unknown settings"):
        asyncio.run(run())



def test_the_ledger_counts_the_pools_slots_across_users(kube_config, make_spawner):
    # 4 whole GPUs in the pool: two users holding 2 each leave none for a third.
    async def run():
        holders = []
        for name in ("ann", "ben"):
            spawner = make_spawner(ManifestOnly, name, options={"gpus": 2})
            await spawner.start()
            holders.append(spawner)
        third = make_spawner(ManifestOnly, "cat", options={"profile": "1-gpu"})
        with pytest.raises(HTTPError) as refused:
            await third.start()
        return holders, third, refused.value

    holders, third, error = asyncio.run(run())
    slots = [env_of(s)["GPULAB_LEDGER_SLOTS"].split(",") for s in holders]
    assert len(set(slots[0]) | set(slots[1])) == 4  # no slot granted twice
    assert error.status_code in (403, 409)
    assert "in use" in error.jupyterhub_message
    assert third.manifest is None
