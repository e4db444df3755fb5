"""GPU telemetry per rank: the rank's own device (by UUID or index), readings into the
metrics with the energy used since the rank started. A static inventory with set readings
stands in for the node's devices (the GPU test reads real NVML)."""

import time

from gpulab.gpus import StaticInventory
from gpulab.training.telemetry import TelemetrySampler, rank_device, start_for_rank


def test_the_rank_device_is_the_first_visible_one():
    inventory = StaticInventory.synthetic(2)
    first, second = (g.uuid for g in inventory.devices())
    assert rank_device({"CUDA_VISIBLE_DEVICES": f"{second},{first}"}, inventory) == second
    assert rank_device({"CUDA_VISIBLE_DEVICES": "1,0"}, inventory) == second
    assert rank_device({"CUDA_VISIBLE_DEVICES": ""}, inventory) is None
    assert rank_device({}, inventory) is None


def test_readings_reach_the_sink_with_energy_since_start():
    inventory = StaticInventory.synthetic(1)
    [uuid] = [g.uuid for g in inventory.devices()]
    inventory.set_telemetry(uuid, utilization_percent=50.0, memory_used_bytes=2**30,
                            power_watts=300.0, energy_joules=1000.0)
    seen = []
    sampler = TelemetrySampler(inventory, uuid, 0.05, seen.append).start()
    inventory.set_telemetry(uuid, energy_joules=1000.0 + 3600.0, utilization_percent=90.0)
    time.sleep(0.3)
    sampler.stop()
    assert seen[0]["gpu_energy_wh"] == 0.0 and seen[0]["gpu_utilization_pct"] == 50.0
    assert seen[-1]["gpu_energy_wh"] == 1.0 and seen[-1]["gpu_utilization_pct"] == 90.0
    assert {r["gpu_uuid"] for r in seen} == {uuid}
    assert len(seen) >= 3  # the first reading, some on the interval, the last at stop


def test_no_sampler_without_an_interval_or_a_gpu(monkeypatch):
    inventory = StaticInventory.synthetic(1)
    assert start_for_rank(None, print, inventory) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert start_for_rank(1.0, print, inventory) is None
