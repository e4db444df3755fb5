"""Progress of a training run in the notebook: steps, loss, samples/s, restarts — read
from the run's metrics as the ranks write them (rank 0's records)."""

from __future__ import annotations

import html
import sys
import time
from typing import Any

from gpulab.clusters.progress import in_notebook


class TrainProgress:
    def __init__(self, run: Any, name: str, every: float = 0.5):
        self.run = run
        self.name = name
        self.every = every
        self.cursor: Any = None
        self.last: dict[str, Any] = {}
        self.rate: float | None = None
        self._samples: list[tuple[float, float]] = []  # (time, cumulative samples)
        self._total = 0.0
        self.shown_at = 0.0
        self.restarts = 0
        self.status = "starting"
        self.handle = None
        if in_notebook():
            from IPython.display import display

            self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, str]:
        step = self.last.get("step", "-")
        parts = [f"step {step}"]
        for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
            if isinstance(self.last.get(key), (int, float)):
                parts.append(f"{key} {self.last[key]:.4g}")
        if self.rate:
            parts.append(f"{self.rate:,.0f} samples/s")
        if self.restarts:
            parts.append(f"{self.restarts} restart(s)")
        text = f"run {self.name!r} {self.status}: " + " · ".join(parts)
        rendered = (f"<div><b>run {html.escape(self.name)}</b> {html.escape(self.status)}: "
                    f"{html.escape(' · '.join(parts))}</div>")
        return {"text/plain": text, "text/html": rendered}

    def poll(self, status: str | None = None, force: bool = False) -> None:
        """Read what the ranks logged since last time; show it (at most every ``every`` s)."""
        if status:
            self.status = status
        now = time.monotonic()
        if not force and now - self.shown_at < self.every:
            return
        records, self.cursor = self.run.read_metrics(self.cursor)
        for record in records:
            if record.get("rank", 0) != 0:
                continue
            self.last = record
            if isinstance(record.get("samples"), (int, float)):
                self._total += record["samples"]
                self._samples.append((record.get("time", now), self._total))
        self._samples = self._samples[-50:]
        if len(self._samples) >= 2 and self._samples[-1][0] > self._samples[0][0]:
            (t0, s0), (t1, s1) = self._samples[0], self._samples[-1]
            self.rate = (s1 - s0) / (t1 - t0)
        self.shown_at = now
        self._show()

    def _show(self) -> None:
        bundle = self._bundle()
        if self.handle is not None:
            self.handle.update(bundle, raw=True)
        else:
            print(bundle["text/plain"], file=sys.stderr, flush=True)
