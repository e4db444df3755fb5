"""What a training function gets: ``train_fn(ctx)``.

``ctx.rank``, ``ctx.local_rank``, ``ctx.world_size``, ``ctx.local_world_size``,
``ctx.device`` (``cuda:0`` on a GPU worker: its own GPU; else ``cpu``), ``ctx.backend``;
``ctx.log(step, **metrics)`` appends to the run's metrics (every rank may log; the notebook's
progress and the dashboards read rank 0's); ``ctx.save(state, step)`` writes a checkpoint of
the state after ``step`` (rank 0 writes, the others wait for it, so every rank resumes from
the same one); ``ctx.load_latest()`` is ``(step, state)`` of the newest checkpoint or None
— call it at the start and go on from ``step + 1``, and a restarted run resumes where it
was (the metrics the lost attempt logged after ``step`` are superseded by the new ones).
``ctx.attempt`` counts restarts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainContext:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: Any
    backend: str
    attempt: int
    run_url: str | None
    _run: Any = field(default=None, repr=False)
    _last_step: int = field(default=0, repr=False)
    _telemetry: Any = field(default=None, repr=False)

    @classmethod
    def for_rank(cls, spec: dict[str, Any], *, device: Any, backend: str) -> TrainContext:
        run = None
        if spec.get("run_url"):
            from gpulab.runs import Run

            run = Run.attach(spec["run_url"])
        ctx = cls(rank=spec["rank"], local_rank=spec["local_rank"],
                  world_size=spec["world_size"], local_world_size=spec["local_world_size"],
                  device=device, backend=backend, attempt=spec["attempt"],
                  run_url=spec.get("run_url"), _run=run)
        if run is not None:
            from gpulab.training.telemetry import start_for_rank

            ctx._telemetry = start_for_rank(spec.get("telemetry_interval"), ctx._log_telemetry)
        return ctx

    @classmethod
    def from_env(cls, run_url: str | None = None) -> TrainContext:
        """A context for a script under torchrun (or a plain single process): ranks from
        torchrun's environment, metrics and checkpoints to ``run_url`` if given."""
        import torch

        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        cuda = torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", 0))
        run = None
        if run_url:
            from gpulab.runs import Run

            run = Run.attach(run_url)
        return cls(rank=rank, local_rank=local, world_size=world,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
                   device=torch.device("cuda", local) if cuda else torch.device("cpu"),
                   backend="nccl" if cuda else "gloo", attempt=0, run_url=run_url, _run=run)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def run(self) -> Any:
        return self._run

    def log(self, step: int, **metrics: Any) -> None:
        self._last_step = step
        if self._run is not None:
            self._run.log(step, rank=self.rank, **metrics)

    def _log_telemetry(self, fields: dict[str, Any]) -> None:
        # At the last step this rank logged: the dashboards line readings up with training.
        if self._run is not None:
            self._run.log(self._last_step, rank=self.rank, **fields)

    def save(self, state: Any, step: int) -> None:
        """Checkpoint ``state`` at ``step``: written atomically by rank 0; every rank
        returns once it is on disk (a barrier), so a restart finds it whichever rank died."""
        if self._run is not None and self.rank == 0:
            self._run.save_checkpoint(step, state)
        self._barrier()

    def load_latest(self, **torch_kwargs: Any) -> tuple[int, Any] | None:
        """``(step, state)`` of the newest checkpoint, or None (a fresh run)."""
        if self._run is None:
            return None
        torch_kwargs.setdefault("map_location", self.device)
        return self._run.load_latest(**torch_kwargs)

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self._telemetry is not None:
            self._telemetry.stop()
        if self._run is not None:
            self._run.close()
