"""gpulab.allocation: what the sidebar's allocation card shows, from a static inventory
with readings and from the quota service's api/me answer."""

from datetime import UTC, datetime, timedelta

from gpulab import allocation
from gpulab.gpus import StaticInventory


def test_only_the_allocated_devices_are_read():
    inventory = StaticInventory.synthetic(3, name="H100", memory_gib=80)
    mine = [g.uuid for g in inventory.devices()][1:2]
    inventory.set_telemetry(mine[0], utilization_percent=87.0,
                            memory_used_bytes=10 * 1024**3)
    [gpu] = allocation.gpus(mine, inventory)
    assert gpu["id"] == mine[0] and gpu["name"] == "H100"
    assert gpu["memory_total_mib"] == 80 * 1024
    assert gpu["memory_used_mib"] == 10 * 1024
    assert gpu["utilization_pct"] == 87.0


def test_a_device_the_inventory_does_not_know_still_shows():
    [gpu] = allocation.gpus(["GPU-gone"], StaticInventory([]))
    assert gpu == {"id": "GPU-gone", "name": "GPU-gone", "memory_total_mib": None,
                   "memory_used_mib": None, "utilization_pct": None, "power_watts": None}


def test_quota_summary_of_this_server():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    me = {
        "limits": {"gpu_hours": 10.0, "window": "7d", "max_session_seconds": 8 * 3600},
        "usage": {"gpu_hours": 2.5},
        "budget_left_gpu_hours": 7.5,
        "allocations": [
            {"server": "", "gpus": 1, "granted_at": (now - timedelta(hours=3)).isoformat()},
            {"server": "other", "gpus": 1, "granted_at": now.isoformat()},
        ],
        "warnings": [{"server": "", "message": "budget low"},
                     {"server": "other", "message": "not this server's"}],
    }
    summary = allocation.quota_summary(me, "", now=now)
    assert summary == {"gpu_hours_used": 2.5, "gpu_hours_limit": 10.0, "gpu_hours_left": 7.5,
                       "window": "7d", "session_seconds_left": 5 * 3600,
                       "warnings": ["budget low"]}


def test_outside_the_hub_there_is_no_quota_part():
    env = {"CUDA_VISIBLE_DEVICES": "", "GPULAB_MAX_DASK_WORKERS": "6", "JUPYTERHUB_USER": "ada"}
    described = allocation.describe(env)
    assert described["quota"] is None and described["gpus"] == []
    assert described["dask_workers"] == {"limit": 6, "in_use": None}
    assert described["user"] == "ada"


def test_the_hubs_description_names_devices_this_node_cannot_see():
    env = {"GPULAB_ALLOCATED_DEVICES": "GPU-static-0001",
           "GPULAB_GPU_INFO": '[{"index": 1, "uuid": "GPU-static-0001", "name": "Static GPU",'
                              ' "memory_bytes": 85899345920}]'}
    [gpu] = allocation.describe(env, quota=None, inventory=StaticInventory([]))["gpus"]
    assert (gpu["name"], gpu["memory_total_mib"]) == ("Static GPU", 80 * 1024)
    # A malformed hint costs the names only.
    env["GPULAB_GPU_INFO"] = "not json"
    [gpu] = allocation.describe(env, quota=None, inventory=StaticInventory([]))["gpus"]
    assert gpu["name"] == "GPU-static-0001"
