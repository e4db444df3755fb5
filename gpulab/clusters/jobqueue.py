"""Dask clusters whose workers are Slurm jobs (dask-jobqueue's ``SLURMCluster``), for a
server that runs on a Slurm cluster (gpulab_hub.slurm).

With ``GPULAB_SLURM_CLUSTER=1``, ``gpulab.clusters.start`` (and so the sidebar) starts the
cluster's scheduler in this process, as on one machine, and each worker as a batch job:
``--gres=gpu:1`` (``gpu:<type>:1`` with ``GPULAB_SLURM_GPU_TYPE``) per GPU worker, and a
walltime that ends with this server's session (``GPULAB_SESSION_ENDS_AT``, set by the
Slurm spawner) or ``GPULAB_SLURM_WALLTIME``, whichever comes first. Listing, scaling,
stopping and connecting are the local backend's (the cluster is owned by this process, in
the same registry); only the start differs.

The policy's limits apply as on one machine: the user's Dask workers at once
(``GPULAB_MAX_DASK_WORKERS``, and the quota service's ledger across all their servers),
and GPU workers: at most ``GPULAB_MAX_GPU_WORKERS`` over this server's clusters (what the
user's ``max_gpus`` left at spawn). Slurm picks the GPUs, so the ledger records the
cluster's workers, not devices (as for a Dask Gateway cluster); the GPU-hours of worker
jobs are Slurm's accounting.

Settings (environment): ``GPULAB_SLURM_QUEUE`` (partition), ``GPULAB_SLURM_ACCOUNT``,
``GPULAB_SLURM_WALLTIME`` (default 01:00:00), ``GPULAB_SLURM_WORKER_CORES`` (default 1) and
``GPULAB_SLURM_WORKER_MEMORY`` (default "4 GiB") where the spec leaves them unset,
``GPULAB_SLURM_INTERFACE`` (the network interface the workers reach the scheduler on),
``GPULAB_SLURM_SHARED_DIR`` (a folder the compute nodes see, for the cluster's TLS
certificates and worker logs; default ``~/.gpulab/jobqueue``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpulab.clusters.limits import ClusterLimitError, check_workers, worker_limit
from gpulab.clusters.spec import ClusterSpec, SpecError

ENABLE_ENV = "GPULAB_SLURM_CLUSTER"
MIN_WALLTIME_SECONDS = 120  # less than this left in the session: no worker job is worth it


def slurm_walltime(seconds: float) -> str:
    """dask-jobqueue's walltime (``HH:MM:SS``, hours may exceed 24), rounded down to a
    minute so a worker never outlives the session."""
    minutes = max(1, math.floor(seconds / 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def _walltime_seconds(text: str) -> float:
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return float(hours * 3600 + minutes * 60 + seconds)


@dataclass(frozen=True)
class SlurmSettings:
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    worker_cores: int = 1
    worker_memory: str = "4 GiB"
    gpu_type: str = ""
    interface: str | None = None
    shared_dir: str = "~/.gpulab/jobqueue"
    session_ends_at: float | None = None  # Unix seconds
    max_gpu_workers: int | None = None  # None: no limit

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlurmSettings | None:
        """The settings, or None when ``GPULAB_SLURM_CLUSTER`` is not 1; ``ValueError``
        naming the variable for a bad value."""
        env = os.environ if env is None else env
        flag = env.get(ENABLE_ENV, "").strip()
        if flag in ("", "0"):
            return None
        if flag != "1":
            raise ValueError(f"{ENABLE_ENV} must be 1 or 0, not {flag!r}")

        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        def whole(name: str, default: int | None) -> int | None:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit():
                raise ValueError(f"{name} must be a whole number >= 0, not {raw!r}")
            return int(raw)

        walltime = text("GPULAB_SLURM_WALLTIME") or cls.walltime
        try:
            _walltime_seconds(walltime)
        except ValueError:
            raise ValueError(
                f"GPULAB_SLURM_WALLTIME must be HH:MM:SS, not {walltime!r}"
            ) from None
        ends = text("GPULAB_SESSION_ENDS_AT")
        try:
            session_ends_at = float(ends) if ends else None
        except ValueError:
            raise ValueError(
                f"GPULAB_SESSION_ENDS_AT must be Unix seconds, not {ends!r}"
            ) from None
        return cls(
            queue=text("GPULAB_SLURM_QUEUE"),
            account=text("GPULAB_SLURM_ACCOUNT"),
            walltime=walltime,
            worker_cores=whole("GPULAB_SLURM_WORKER_CORES", 1) or 1,
            worker_memory=text("GPULAB_SLURM_WORKER_MEMORY") or cls.worker_memory,
            gpu_type=text("GPULAB_SLURM_GPU_TYPE") or "",
            interface=text("GPULAB_SLURM_INTERFACE"),
            shared_dir=text("GPULAB_SLURM_SHARED_DIR") or cls.shared_dir,
            session_ends_at=session_ends_at,
            max_gpu_workers=whole("GPULAB_MAX_GPU_WORKERS", None),
        )

    def walltime_now(self, now: float | None = None) -> str:
        """The workers' walltime for a cluster started now: the configured one, cut to what
        is left of the session. ``ClusterLimitError`` when almost nothing is left."""
        seconds = _walltime_seconds(self.walltime)
        if self.session_ends_at is not None:
            left = self.session_ends_at - (time.time() if now is None else now)
            if left < MIN_WALLTIME_SECONDS:
                raise ClusterLimitError(
                    "session: this server's session ends in "
                    f"{max(0, int(left))} s; worker jobs need at least "
                    f"{MIN_WALLTIME_SECONDS} s. Start a new session for a cluster.",
                    reason="session",
                )
            seconds = min(seconds, left)
        return slurm_walltime(seconds)


def check_spec(spec: ClusterSpec) -> None:
    """What a Slurm worker can't do (it is a plain Dask worker in a batch job)."""
    for name in ("rmm_pool_size", "device_memory_limit"):
        if getattr(spec, name) is not None:
            raise SpecError(f"{name} is not available for Slurm workers; leave it unset",
                            field=name)
    if spec.protocol == "ucx":
        raise SpecError("protocol 'ucx' is not available for Slurm workers; use 'tls'",
                        field="protocol")


def check_gpu_workers(spec: ClusterSpec, others: list[Mapping[str, Any]],
                      limit: int | None) -> None:
    """Refuse GPU workers beyond what the user's ``max_gpus`` left (``limit``)."""
    if limit is None or spec.gpus == 0:
        return
    in_use = sum(len(r.get("gpus", [])) for r in others)
    if in_use + spec.gpus > limit:
        raise ClusterLimitError(
            f"GPUs: this cluster asks for {spec.gpus} GPU worker(s) but your quota leaves "
            f"{limit} beside your servers' GPUs and {in_use} {'is' if in_use == 1 else 'are'}"
            " in use. Stop a GPU cluster, or ask for fewer GPU workers.",
            reason="gpus", limit=limit, in_use=in_use,
        )


def cluster_kwargs(spec: ClusterSpec, settings: SlurmSettings, security: Any,
                   plugins: list[Any], now: float | None = None) -> dict[str, Any]:
    """``SLURMCluster``'s arguments for ``spec`` (without ``n_workers``)."""
    shared = Path(os.path.expanduser(settings.shared_dir))
    gres = f"gpu:{settings.gpu_type}:1" if settings.gpu_type else "gpu:1"
    protocol = {"tls": "tls://", "tcp": "tcp://"}[spec.protocol]
    scheduler_options: dict[str, Any] = {"plugins": plugins, "dashboard_address": ":0"}
    kwargs: dict[str, Any] = {
        "cores": spec.threads_per_worker or settings.worker_cores,
        "memory": spec.memory_limit or settings.worker_memory,
        "processes": 1,
        "queue": settings.queue,
        "account": settings.account,
        "walltime": settings.walltime_now(now),
        "job_name": "gpulab-dask-worker",
        "job_extra_directives": [f"--gres={gres}"] if spec.gpus_per_worker else [],
        # A GPU worker advertises its GPU, so tasks that need one can ask for it.
        "worker_extra_args": ["--resources", "GPU=1"] if spec.gpus_per_worker else [],
        "protocol": protocol,
        "security": security,
        "shared_temp_directory": str(shared),
        "log_directory": str(shared / "logs"),
        "python": sys.executable,
        "scheduler_options": scheduler_options,
    }
    if settings.interface:
        kwargs["interface"] = settings.interface
    return kwargs


def build_slurm(spec: ClusterSpec, settings: SlurmSettings, security: Any,
                plugins: list[Any]) -> Any:
    from dask_jobqueue import SLURMCluster

    kwargs = cluster_kwargs(spec, settings, security, plugins)
    Path(kwargs["log_directory"]).mkdir(parents=True, exist_ok=True)
    return SLURMCluster(n_workers=spec.workers, **kwargs)


def start(spec: ClusterSpec, settings: SlurmSettings, *, wait: bool, progress: bool | None,
          registry: Any, quota: Any, owner_kind: str | None) -> Any:
    """``gpulab.clusters.start`` on Slurm (see the module docstring)."""
    from gpulab.clusters import manager
    from gpulab.clusters import owner as owners
    from gpulab.clusters.local import make_security
    from gpulab.clusters.registry import Registry, new_id
    from gpulab.quota.client import QuotaServiceError

    check_spec(spec)
    registry = registry or Registry()
    name = spec.name or f"cluster-{len(registry.records()) + 1}"
    with registry.locked():
        live = manager._live(registry, quota)
        check_workers(spec.workers, live, worker_limit())
        check_gpu_workers(spec, live, settings.max_gpu_workers)
        settings.walltime_now()  # refuse now, before anything is recorded
        cluster_id = new_id()
        if quota is not None:
            try:  # workers only: Slurm, not this server's allocation, holds their GPUs
                quota.admit_cluster(cluster_id, name, spec.workers, 0, [])
            except QuotaServiceError as e:
                raise owners._refusal(e) from None
        security = make_security(spec.protocol)
        # One GPU entry per GPU worker job (Slurm picks the device): what the GPU limit
        # counts, and what bounds a later scale, as on one machine.
        gpus = [f"slurm-gpu-{cluster_id}-{i}" for i in range(spec.gpus)]
        record = manager.new_record(cluster_id, name, spec, security, gpus,
                                    owner_kind or manager._owner_kind())
        registry.write(record)
    owned = owners.OwnedCluster(record, spec, registry, quota)
    owners.adopt(owned)
    return manager.launch(
        owned, lambda o: build_slurm(spec, settings, security, [owners.RecordPlugin(o)]),
        f"gpulab-slurm-start-{cluster_id}", wait=wait, progress=progress,
    )
