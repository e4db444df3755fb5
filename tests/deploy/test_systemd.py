"""GpulabSystemdSpawner's unit: the real SystemdSpawner start after a real admission, up to
systemd. There is no systemd here, so the four calls that talk to it (is the unit
running, has it failed, ``systemd-run``, stop it) are replaced by ``FakeSystemd``, which
keeps what ``systemd-run`` would have been given. See docs/deploy-systemd.md.
"""

from __future__ import annotations

import asyncio

import pytest
from systemdspawner import systemdspawner as systemdspawner_module
from tornado.web import HTTPError

from gpulab.gpus import StaticInventory
from gpulab_hub.systemd import GpulabSystemdSpawner, device_allow

GIB = 2**30
# Two whole GPUs (/dev/nvidia0, /dev/nvidia1) and GPU 2 in MIG mode with two slices.
GPUS = [
    {"index": 0, "uuid": "GPU-aaaa", "name": "NVIDIA A100", "memory_bytes": 80 * GIB},
    {"index": 1, "uuid": "GPU-bbbb", "name": "NVIDIA A100", "memory_bytes": 80 * GIB},
    {"index": 2, "uuid": "MIG-cccc-1", "name": "NVIDIA A100 MIG 1g.10gb",
     "memory_bytes": 10 * GIB, "mig_parent_uuid": "GPU-cccc", "profile": "1g.10gb"},
    {"index": 2, "uuid": "MIG-cccc-2", "name": "NVIDIA A100 MIG 1g.10gb",
     "memory_bytes": 10 * GIB, "mig_parent_uuid": "GPU-cccc", "profile": "1g.10gb"},
]
SHARED = ["/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "/dev/nvidia-uvm-tools rw"]


class FakeSystemd:
    """Stands in for systemd: records the unit ``systemd-run`` would start."""

    def __init__(self):
        self.units: dict[str, dict] = {}

    async def service_running(self, unit_name):
        return unit_name in self.units

    async def service_failed(self, unit_name):
        return False

    async def start_transient_service(self, unit_name, **unit):
        self.units[unit_name] = unit

    async def stop_service(self, unit_name):
        self.units.pop(unit_name, None)


@pytest.fixture
def systemd(monkeypatch, quota_config):
    fake = FakeSystemd()
    for name in ("service_running", "service_failed", "start_transient_service",
                 "stop_service"):
        monkeypatch.setattr(systemdspawner_module.systemd, name, getattr(fake, name))
    c = quota_config
    c.GpulabQuota.static_gpus = GPUS
    c.GpulabSystemdSpawner.dynamic_users = True
    c.GpulabSystemdSpawner.unit_extra_properties = {"LimitNOFILE": "65536"}
    c.GpulabSystemdSpawner.profile_resources = {
        "cpu": {"mem_limit": "4G", "cpu_limit": 2},
        "*": {"mem_limit": "64G", "cpu_limit": 16},
    }
    return fake


def start(make_spawner, name, options, groups=()):
    spawner = make_spawner(GpulabSystemdSpawner, name, groups=groups, options=options)
    asyncio.run(spawner.start())
    return spawner


@pytest.mark.parametrize(
    ("options", "groups", "nodes", "mig"),
    [
        ({"profile": "1-gpu"}, (), ["/dev/nvidia0 rw"], False),
        ({"gpus": 2}, (), ["/dev/nvidia0 rw", "/dev/nvidia1 rw"], False),
        ({"profile": "mig-1g.10gb"}, ("students",), ["/dev/nvidia2 rw"], True),
    ],
)
def test_the_unit_may_open_only_the_granted_gpus_within_the_profiles_limits(
    systemd, make_spawner, options, groups, nodes, mig
):
    spawner = start(make_spawner, "ada", options, groups)
    unit = systemd.units[spawner.unit_name]
    properties = unit["properties"]
    assert properties["DevicePolicy"] == "closed"
    assert properties["DeviceAllow"] == nodes + SHARED + (["char-nvidia-caps r"] if mig else [])
    assert properties["MemoryMax"] == 64 * GIB
    assert properties["CPUQuota"] == "1600%"
    assert properties["DynamicUser"] == "yes"
    assert properties["LimitNOFILE"] == "65536"  # the operator's own properties stay
    granted = spawner.quota.ledger.find_open("ada", "")
    env = unit["environment_variables"]
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(granted.device_uuids)
    assert env["GPULAB_ALLOCATED_DEVICES"] == env["CUDA_VISIBLE_DEVICES"]
    assert env["GPULAB_QUOTA_URL"] == "http://hub:9123/services/gpulab-quota/"


def test_a_cpu_unit_opens_no_gpu_and_gets_the_cpu_limits(systemd, make_spawner):
    spawner = start(make_spawner, "bo", {"profile": "cpu"})
    properties = systemd.units[spawner.unit_name]["properties"]
    assert properties["DevicePolicy"] == "closed"
    assert properties["DeviceAllow"] == []
    assert properties["MemoryMax"] == 4 * GIB and properties["CPUQuota"] == "200%"
    assert systemd.units[spawner.unit_name]["environment_variables"]["CUDA_VISIBLE_DEVICES"] == ""


def test_the_next_spawn_gets_its_own_devices_not_the_last_ones(systemd, make_spawner):
    spawner = start(make_spawner, "cy", {"profile": "1-gpu"})
    first = systemd.units[spawner.unit_name]["properties"]["DeviceAllow"]
    asyncio.run(spawner.stop())
    assert spawner.quota.ledger.find_open("cy", "") is None
    assert systemd.units == {}
    asyncio.run(spawner.start())  # same options, the same spawner object
    again = systemd.units[spawner.unit_name]["properties"]["DeviceAllow"]
    assert again == first and again.count("/dev/nvidiactl rw") == 1


def test_a_refused_spawn_starts_no_unit(systemd, make_spawner):
    holder = start(make_spawner, "eve", {"gpus": 2})  # both whole GPUs
    spawner = make_spawner(GpulabSystemdSpawner, "dee", options={"profile": "1-gpu"})
    with pytest.raises(HTTPError) as refused:
        asyncio.run(spawner.start())
    assert refused.value.status_code in (403, 409)
    assert list(systemd.units) == [holder.unit_name]
    assert spawner.quota.ledger.find_open("dee", "") is None


def test_device_allow_refuses_a_device_this_machine_does_not_have():
    inventory = StaticInventory(GPUS)
    with pytest.raises(ValueError, match="'GPU-elsewhere' is not in this machine's GPU"):
        device_allow(["GPU-aaaa", "GPU-elsewhere"], inventory)
    assert device_allow([], inventory) == []


def test_a_profile_without_limits_gets_the_spawners_own_back(systemd, quota_config,
                                                             make_spawner):
    quota_config.GpulabSystemdSpawner.profile_resources = {"1-gpu": {"mem_limit": "64G"}}
    quota_config.GpulabSystemdSpawner.mem_limit = "2G"
    spawner = start(make_spawner, "fay", {"profile": "1-gpu"})
    assert systemd.units[spawner.unit_name]["properties"]["MemoryMax"] == 64 * GIB
    asyncio.run(spawner.stop())
    spawner.user_options = {"profile": "cpu"}
    asyncio.run(spawner.start())
    assert systemd.units[spawner.unit_name]["properties"]["MemoryMax"] == 2 * GIB
