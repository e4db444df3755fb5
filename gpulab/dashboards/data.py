"""``RunData``: the data store of one run's dashboard (no Panel widgets, no Bokeh here).

It attaches to a ``gpulab.runs.Run`` and ``refresh()`` tails its metrics with the store's
cursor, so each call reads only the records written since the last. What it keeps:

- ``series(name)``: rank 0's values of metric ``name`` by step, after
  ``drop_superseded(records, manifest.restarts)`` (the notebook's progress reads rank 0
  too). A new restart re-filters what was read before. Metric names are data: any string,
  kept as dict keys, never used as code or markup.
- ``rates()``: steps/s and samples/s between rank 0's consecutive kept records (samples/s
  uses the ``samples`` each record logged: rank 0's samples, as the progress shows).
- ``gpus``: per device (``gpu_uuid``) series of telemetry (``gpu_*`` records, every rank's),
  including superseded attempts: the energy was spent all the same.
- ``energy_wh``: the sum over (device, rank, attempt) of the last ``gpu_energy_wh`` (each
  rank's sampler counts from its own start); ``gpu_hours``: the sum over the same segments
  of the time between their first and last samples (what was measured, so it undercounts
  by at most a sampling interval per segment).
- the manifest's ``status``, ``config``, ``restarts``, ``checkpoints``.

``version`` goes up whenever any of it changed; a view watches it. Per metric,
``generation(name)`` changes when its series was rebuilt (a restart), otherwise a series
only grows, so a view can send just the new points.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param

from gpulab.runs import Run, RunStore, drop_superseded

GPU_PREFIX = "gpu_"
GPU_FIELDS = ("gpu_utilization_pct", "gpu_memory_used_bytes", "gpu_power_w", "gpu_energy_wh")
RESERVED = frozenset({"step", "time", "rank", "attempt"})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class _Columns:
    """Growing columns of floats, with a numpy view cached by length."""

    def __init__(self, *names: str):
        self.lists: dict[str, list[float]] = {n: [] for n in names}
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(next(iter(self.lists.values())))

    def append(self, **values: float) -> None:
        for name, column in self.lists.items():
            column.append(values[name])

    def array(self, name: str) -> np.ndarray:
        cached = self._arrays.get(name)
        if cached is None or len(cached) != len(self):
            cached = self._arrays[name] = np.asarray(self.lists[name], dtype=float)
        return cached


@dataclass
class _Metric:
    raw: _Columns = field(default_factory=lambda: _Columns("step", "time", "attempt", "value"))
    kept: _Columns = field(default_factory=lambda: _Columns("step", "time", "value"))
    generation: int = 0


@dataclass
class Series:
    """One metric: ``steps``, ``values`` and ``times`` (epoch seconds), equally long."""

    steps: np.ndarray
    values: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


class RunData(param.Parameterized):
    """The live data of one run; ``RunData(run)`` or ``RunData.open(store, owner, run_id)``."""

    run = param.ClassSelector(class_=Run, constant=True, doc="The run it reads.")
    run_name = param.String(default="", doc="The run's name (data: escape it to render).")
    status = param.String(default="")
    config = param.Dict(default={})
    restarts = param.List(default=[])
    checkpoints = param.List(default=[])
    metrics = param.List(default=[], doc="Names of rank 0's metrics, sorted.")
    devices = param.List(default=[], doc="The GPUs' UUIDs seen in telemetry.")
    energy_wh = param.Number(default=0.0)
    gpu_hours = param.Number(default=0.0)
    records_read = param.Integer(default=0, doc="Records read so far, all ranks.")
    version = param.Integer(default=0, doc="Goes up when anything above changed.")

    def __init__(self, run: Run, **params: Any):
        super().__init__(run=run, **params)
        self._lock = threading.RLock()
        self._cursor: Any = None
        self._metrics: dict[str, _Metric] = {}
        self._timeline = _Metric(raw=_Columns("step", "time", "attempt", "value"))
        self._gpus: dict[str, _Columns] = {}
        # (uuid, rank, attempt) -> [first time, last time, last energy Wh]
        self._segments: dict[tuple[str, int, int], list[float]] = {}
        self._restarts_seen: list[dict[str, Any]] = []

    @classmethod
    def open(cls, store: RunStore, owner: str, run_id: str, **params: Any) -> RunData:
        return cls(store.open(owner, run_id), **params)

    # -- reading ------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the manifest and the records written since last time; True if anything
        changed (then ``version`` went up)."""
        with self._lock:
            manifest = self.run.manifest()
            records, self._cursor = self.run.read_metrics(since=self._cursor)
            restarts = list(manifest.restarts)
            rebuild = restarts != self._restarts_seen
            self._restarts_seen = restarts
            ours = [r for r in records if r.get("rank", 0) == 0 and "gpu_uuid" not in r]
            for record in ours:
                self._add_raw(record)
            for record in records:
                if isinstance(record.get("gpu_uuid"), str):
                    self._add_gpu(record)
            if rebuild:
                self._rebuild(restarts)
            else:
                for record in drop_superseded(ours, restarts):
                    self._add_kept(record)
            changed = bool(records) or rebuild
            update = {
                "run_name": manifest.name, "status": manifest.status,
                "config": dict(manifest.config), "restarts": restarts,
                "checkpoints": list(manifest.checkpoints),
            }
            update = {k: v for k, v in update.items() if getattr(self, k) != v}
            changed = changed or bool(update)
            if records:
                update["records_read"] = self.records_read + len(records)
                names = sorted(self._metrics)
                if names != self.metrics:
                    update["metrics"] = names
                devices = sorted(self._gpus)
                if devices != self.devices:
                    update["devices"] = devices
                update["energy_wh"] = sum(s[2] for s in self._segments.values())
                update["gpu_hours"] = sum(s[1] - s[0] for s in self._segments.values()) / 3600
            if changed:
                update["version"] = self.version + 1
                self.param.update(**update)
            return changed

    def _add_raw(self, record: dict[str, Any]) -> None:
        step, time, attempt = record["step"], record["time"], record.get("attempt", 0)
        samples = _number(record.get("samples"))
        self._timeline.raw.append(step=step, time=time, attempt=attempt,
                                  value=math.nan if samples is None else samples)
        for name, value in record.items():
            if name in RESERVED or name.startswith(GPU_PREFIX):
                continue
            number = _number(value)
            if number is None:
                continue
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = _Metric()
            metric.raw.append(step=step, time=time, attempt=attempt, value=number)

    def _add_kept(self, record: dict[str, Any]) -> None:
        step, time = record["step"], record["time"]
        samples = _number(record.get("samples"))
        self._timeline.kept.append(step=step, time=time,
                                   value=math.nan if samples is None else samples)
        for name, value in record.items():
            if name in RESERVED or name.startswith(GPU_PREFIX):
                continue
            number = _number(value)
            if number is not None:
                self._metrics[name].kept.append(step=step, time=time, value=number)

    def _rebuild(self, restarts: list[dict[str, Any]]) -> None:
        for metric in [self._timeline, *self._metrics.values()]:
            raw = metric.raw.lists
            rows = [{"step": s, "attempt": a, "i": i}
                    for i, (s, a) in enumerate(zip(raw["step"], raw["attempt"], strict=True))]
            metric.kept = _Columns("step", "time", "value")
            for row in drop_superseded(rows, restarts):
                i = row["i"]
                metric.kept.append(step=raw["step"][i], time=raw["time"][i],
                                   value=raw["value"][i])
            metric.generation += 1

    def _add_gpu(self, record: dict[str, Any]) -> None:
        uuid, time = record["gpu_uuid"], record["time"]
        columns = self._gpus.get(uuid)
        if columns is None:
            columns = self._gpus[uuid] = _Columns("time", "step", *GPU_FIELDS, "energy_total")
        values = {name: _number(record.get(name)) for name in GPU_FIELDS}
        key = (uuid, record.get("rank", 0), record.get("attempt", 0))
        segment = self._segments.get(key)
        if segment is None:
            segment = self._segments[key] = [time, time, 0.0]
        segment[0], segment[1] = min(segment[0], time), max(segment[1], time)
        if values["gpu_energy_wh"] is not None:
            segment[2] = max(segment[2], values["gpu_energy_wh"])
        device_total = sum(s[2] for k, s in self._segments.items() if k[0] == uuid)
        columns.append(time=time, step=record["step"], energy_total=device_total,
                       **{k: math.nan if v is None else v for k, v in values.items()})

    # -- what views read ----------------------------------------------------------------

    def series(self, name: str) -> Series:
        """Rank 0's kept values of metric ``name`` (KeyError if it has none)."""
        with self._lock:
            kept = self._metrics[name].kept
            return Series(kept.array("step"), kept.array("value"), kept.array("time"))

    def generation(self, name: str) -> int:
        with self._lock:
            return self._metrics[name].generation

    def rates(self) -> dict[str, np.ndarray]:
        """``step``, ``time``, ``steps_per_s``, ``samples_per_s`` between rank 0's
        consecutive kept records where the step went up (NaN where no ``samples``)."""
        with self._lock:
            kept = self._timeline.kept
            steps, times, samples = kept.array("step"), kept.array("time"), kept.array("value")
        if len(steps) < 2:
            empty = np.empty(0)
            return {"step": empty, "time": empty, "steps_per_s": empty, "samples_per_s": empty}
        dstep, dt = np.diff(steps), np.diff(times)
        ok = (dstep > 0) & (dt > 0)
        return {"step": steps[1:][ok], "time": times[1:][ok],
                "steps_per_s": dstep[ok] / dt[ok], "samples_per_s": samples[1:][ok] / dt[ok]}

    def gpu(self, uuid: str) -> dict[str, np.ndarray]:
        """Device ``uuid``'s telemetry: ``time``, ``step``, the ``gpu_*`` fields (NaN where
        not read) and ``energy_total`` (Wh since the run started, over restarts)."""
        with self._lock:
            columns = self._gpus[uuid]
            return {name: columns.array(name) for name in columns.lists}

    def generation_of_rates(self) -> int:
        with self._lock:
            return self._timeline.generation
