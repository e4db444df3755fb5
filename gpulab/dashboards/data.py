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
import weakref
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import param

from gpulab.runs import Run, RunStore
from gpulab.runs.columns import Columns, concatenate

GPU_PREFIX = "gpu_"
GPU_FIELDS = ("gpu_utilization_pct", "gpu_memory_used_bytes", "gpu_power_w", "gpu_energy_wh")
RESERVED = frozenset({"step", "time", "rank", "attempt"})
_PLAIN_NUMBERS = frozenset({int, float})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _kept(steps: np.ndarray, attempts: np.ndarray,
          restarts: list[dict[str, Any]]) -> np.ndarray:
    """The mask of the rows ``gpulab.runs.drop_superseded(rows, restarts)`` keeps, on
    columns: an attempt resumed from a checkpoint at step S replays the steps after S, so
    the earlier attempts keep steps <= S (all dropped for a restart without checkpoint)."""
    resumed_at = [r.get("from_checkpoint_step") for r in restarts]
    if not resumed_at:
        return np.ones(len(steps), dtype=bool)
    limits = [math.inf] * (len(resumed_at) + 1)  # limits[a]: last step attempt a keeps
    for i in range(len(resumed_at) - 1, -1, -1):
        step = resumed_at[i]
        limits[i] = min(-1 if step is None else step, limits[i + 1])
    index = np.minimum(attempts, len(resumed_at)).astype(np.intp)
    return steps <= np.array(limits, dtype=float)[index]


def _rank_zero(blocks: list[Columns]) -> Columns | None:
    """Rank 0's records (not telemetry) of one read, in time order across files."""
    parts = []
    for block in blocks:
        mask = block.rank == 0
        if block.is_telemetry is not None:
            mask &= ~block.is_telemetry
        if mask.all():
            parts.append(block)
        elif mask.any():
            parts.append(_rows(block, mask))
    if len(parts) <= 1:
        return parts[0] if parts else None
    merged = concatenate(parts)  # rank 0's records in two files: a renamed file; rare
    return _rows(merged, np.argsort(merged.time, kind="stable"))


def _rows(block: Columns, rows: np.ndarray) -> Columns:
    return Columns(block.step[rows], block.time[rows], block.rank[rows], block.attempt[rows],
                   values={k: v[rows] for k, v in block.values.items()},
                   present={k: v[rows] for k, v in block.present.items()})


class _Columns:
    """Growing columns of floats in numpy buffers (capacity doubles, so appends are
    amortised O(1)); ``array(name)`` is a view of the filled part."""

    def __init__(self, *names: str):
        self.names = names
        self._buffers: dict[str, np.ndarray] = {n: np.empty(0) for n in names}
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def _reserve(self, extra: int) -> None:
        need = self._length + extra
        capacity = len(self._buffers[self.names[0]])
        if need <= capacity:
            return
        capacity = max(need, 2 * capacity, 16)
        for name, old in self._buffers.items():
            buffer = np.empty(capacity)
            buffer[: self._length] = old[: self._length]
            self._buffers[name] = buffer

    def append(self, **values: float) -> None:
        self._reserve(1)
        for name, buffer in self._buffers.items():
            buffer[self._length] = values[name]
        self._length += 1

    def extend(self, **columns: np.ndarray) -> None:
        """Append equally long columns, one per name."""
        count = len(columns[self.names[0]])
        if not count:
            return
        self._reserve(count)
        end = self._length + count
        for name, buffer in self._buffers.items():
            buffer[self._length:end] = columns[name]
        self._length = end

    def array(self, name: str) -> np.ndarray:
        return self._buffers[name][: self._length]


@dataclass
class _Metric:
    raw: _Columns = field(default_factory=lambda: _Columns("step", "time", "attempt", "value"))
    kept: _Columns = field(default_factory=lambda: _Columns("step", "time", "value"))
    generation: int = 0


@dataclass
class _Batch:
    """Rank 0's records of one read, as columns; ``metrics[name]``: (the rows holding a
    number for it, None for all; its values at those rows)."""

    steps: np.ndarray
    times: np.ndarray
    attempts: np.ndarray
    samples: np.ndarray
    metrics: dict[str, tuple[np.ndarray | None, np.ndarray]] = field(default_factory=dict)


@dataclass
class Series:
    """One metric: ``steps``, ``values`` and ``times`` (epoch seconds), equally long."""

    steps: np.ndarray
    values: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


_SHARED: weakref.WeakValueDictionary[str, RunData] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


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

    @classmethod
    def shared(cls, run: Run) -> RunData:
        """The one ``RunData`` of ``run`` in this process while any view holds it: a
        server's sessions of one run read its metrics once, not once each (a new viewer
        of a long run then renders from memory). Views track the version they drew."""
        with _SHARED_LOCK:
            data = _SHARED.get(run.url)
            if data is None:
                data = _SHARED[run.url] = cls(run)
            return data

    # -- reading ------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the manifest and the records written since last time; True if anything
        changed (then ``version`` went up)."""
        with self._lock:
            manifest = self.run.manifest()
            blocks, self._cursor = self.run.read_columns(since=self._cursor)
            restarts = list(manifest.restarts)
            rebuild = restarts != self._restarts_seen
            self._restarts_seen = restarts
            telemetry = [r for block in blocks for r in block.telemetry]
            for record in sorted(telemetry, key=itemgetter("time")):
                self._add_gpu(record)
            ours = _rank_zero(blocks)
            batch = self._add_batch(ours)
            if rebuild:
                self._rebuild(restarts)
            elif batch is not None:
                self._add_kept(batch, restarts)
            read = sum(map(len, blocks))
            changed = bool(read) or rebuild
            update = {
                "run_name": manifest.name, "status": manifest.status,
                "config": dict(manifest.config), "restarts": restarts,
                "checkpoints": list(manifest.checkpoints),
            }
            update = {k: v for k, v in update.items() if getattr(self, k) != v}
            changed = changed or bool(update)
            if read:
                update["records_read"] = self.records_read + read
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

    def _add_batch(self, ours: Columns | None) -> _Batch | None:
        """Append rank 0's new records ``ours`` to the raw columns, one metric at a time."""
        if ours is None or not len(ours):
            return None
        steps, times, attempts = ours.step, ours.time, ours.attempt
        samples = ours.values.get("samples", np.full(len(steps), math.nan))
        self._timeline.raw.extend(step=steps, time=times, attempt=attempts, value=samples)
        batch = _Batch(steps, times, attempts, samples)
        for name in sorted(ours.values):
            if name.startswith(GPU_PREFIX):
                continue
            values = ours.values[name]
            present = ours.present.get(name)
            rows = None if present is None else np.flatnonzero(present)
            if rows is not None:
                values = values[rows]
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = _Metric()
            picked = slice(None) if rows is None else rows
            metric.raw.extend(step=steps[picked], time=times[picked],
                              attempt=attempts[picked], value=values)
            batch.metrics[name] = (rows, values)
        return batch

    def _add_kept(self, batch: _Batch, restarts: list[dict[str, Any]]) -> None:
        keep = _kept(batch.steps, batch.attempts, restarts)
        every = bool(keep.all())  # the common case: no copies for the mask
        pick = slice(None) if every else keep
        self._timeline.kept.extend(step=batch.steps[pick], time=batch.times[pick],
                                   value=batch.samples[pick])
        for name, (rows, values) in batch.metrics.items():
            steps = batch.steps if rows is None else batch.steps[rows]
            times = batch.times if rows is None else batch.times[rows]
            if not every:
                mask = keep if rows is None else keep[rows]
                steps, times, values = steps[mask], times[mask], values[mask]
            self._metrics[name].kept.extend(step=steps, time=times, value=values)

    def _rebuild(self, restarts: list[dict[str, Any]]) -> None:
        for metric in [self._timeline, *self._metrics.values()]:
            raw = metric.raw
            keep = _kept(raw.array("step"), raw.array("attempt"), restarts)
            metric.kept = _Columns("step", "time", "value")
            metric.kept.extend(step=raw.array("step")[keep], time=raw.array("time")[keep],
                               value=raw.array("value")[keep])
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
            return {name: columns.array(name) for name in columns.names}

    def generation_of_rates(self) -> int:
        with self._lock:
            return self._timeline.generation
