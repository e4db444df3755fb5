"""Per-rank GPU telemetry sampled into the run's metrics: utilisation, memory, power and
energy of the rank's own device (by UUID), every ``interval`` seconds, where NVML answers.

Records go into the rank's metrics at the last step it logged, with ``gpu_*`` fields; the
energy is NVML's counter (joules since the driver loaded) and the energy used since the
rank started (``gpu_energy_wh``), which is what the dashboards sum.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from gpulab.gpus import Inventory


def rank_device(env: Mapping[str, str], inventory: Inventory) -> str | None:
    """The UUID of the device this rank runs on: the first of ``CUDA_VISIBLE_DEVICES``
    (a Dask-CUDA worker lists its own GPU first), by UUID or by NVML index."""
    visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not visible:
        return None
    first = visible[0]
    if not first.isdigit():
        return first
    for gpu in inventory.devices():
        if gpu.index == int(first) and not gpu.is_mig:
            return gpu.uuid
    return None


class TelemetrySampler:
    """A daemon thread that reads one device every ``interval`` s and hands each reading to
    ``sink(fields)``; ``stop()`` takes a last reading (so a short run has at least one)."""

    def __init__(self, inventory: Inventory, uuid: str, interval: float,
                 sink: Callable[[dict[str, Any]], None]):
        self.inventory, self.uuid, self.interval, self.sink = inventory, uuid, interval, sink
        self._stop = threading.Event()
        self._first_energy: float | None = None
        self._thread = threading.Thread(target=self._loop, name="gpulab-telemetry",
                                        daemon=True)

    def start(self) -> TelemetrySampler:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> dict[str, Any] | None:
        reading = self.inventory.telemetry([self.uuid]).get(self.uuid)
        if reading is None:
            return None
        fields: dict[str, Any] = {
            "gpu_uuid": self.uuid,
            "gpu_utilization_pct": reading.utilization_percent,
            "gpu_memory_used_bytes": reading.memory_used_bytes,
            "gpu_power_w": reading.power_watts,
            "gpu_energy_j_counter": reading.energy_joules,
        }
        if reading.energy_joules is not None:
            if self._first_energy is None:
                self._first_energy = reading.energy_joules
            fields["gpu_energy_wh"] = (reading.energy_joules - self._first_energy) / 3600
        self.sink(fields)
        return fields

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5)
            self.sample()


def start_for_rank(interval: float | None, sink: Callable[[dict[str, Any]], None],
                   inventory: Inventory | None = None) -> TelemetrySampler | None:
    """A sampler for this rank's GPU, or None (no interval, no NVML, or a CPU rank)."""
    if not interval:
        return None
    if inventory is None:
        from gpulab.gpus import NVMLInventory

        if not NVMLInventory.available():
            return None
        inventory = NVMLInventory()
    uuid = rank_device(os.environ, inventory)
    if uuid is None:
        return None
    return TelemetrySampler(inventory, uuid, interval, sink).start()
