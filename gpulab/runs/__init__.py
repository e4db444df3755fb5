"""The run store: each training run's manifest, metrics, checkpoints and artifacts.

Usage::

    from gpulab.runs import Run, RunStore

    store = RunStore()                                   # $GPULAB_RUNS_DIR or ~/gpulab-runs
    run = store.create("alice", "mlp <b>v2</b>", config={"lr": 0.01}, world_size=2)
    run.log(1, loss=0.93)                                # rank 0; run.log(1, rank=1, ...)
    run.save_checkpoint(1, {"weights": [0.5], "step": 1})  # keeps the last 3
    step, state = run.load_latest()                      # None before the first checkpoint
    run.finish()                                         # or run.fail(exc, rank=1)
    Run.attach(run.url)                                  # in another process (a DDP rank)

Dashboards read through ``store.list_runs(owner)``, ``store.manifest(owner, run_id)``
and ``store.read_metrics(owner, run_id, since=cursor)`` (a live tail). Paths go through
fsspec: a local folder by default, ``memory://`` in tests, an object store at scale.
See ``store`` for the layout, and ``metrics``/``checkpoints``/``folder`` for crash safety.
"""

from gpulab.runs.acl import Acl, can_view
from gpulab.runs.checkpoints import Checkpoint
from gpulab.runs.errors import (
    InvalidRunInput,
    PermissionDenied,
    RunError,
    RunNotFound,
    RunStateError,
)
from gpulab.runs.ids import new_run_id
from gpulab.runs.manifest import Manifest
from gpulab.runs.metrics import MetricsWriter, drop_superseded
from gpulab.runs.store import Run, RunStore, default_root

__all__ = [
    "Acl",
    "Checkpoint",
    "InvalidRunInput",
    "Manifest",
    "MetricsWriter",
    "PermissionDenied",
    "Run",
    "RunError",
    "RunNotFound",
    "RunStateError",
    "RunStore",
    "can_view",
    "default_root",
    "drop_superseded",
    "new_run_id",
]
