"""The quota settings of a scale-out deployment, in one file every process reads.

On Kubernetes the hub, the quota service and the Dask Gateway run in different pods; on
Slurm and systemd the hub and its services are separate processes too. Each must apply
the same policies, so they live in one JSON or YAML file (a ConfigMap on Kubernetes),
``GPULAB_QUOTA_FILE``, with the ``GpulabQuota`` settings it may hold::

    default_policy: {max_gpus: 2, gpu_hours: 100, window: 7d, max_session: 8h,
                     max_dask_workers: 8}
    group_policies: {students: {max_gpus: 1, profiles: [cpu, mig-1g.10gb]}}
    user_policies: {}
    gpu_pools:                # the GPUs a scheduler places, counted as slots
      - {pool: a100, gpus: 16, name: NVIDIA A100 80GB, memory_gib: 80,
         mig_slices: {1g.10gb: 14}}

``gpu_pools`` expands to ``static_gpus`` (``gpulab_hub.profile_resources.pool_inventory``);
on one machine (systemd) leave both out and the hub asks NVML, or give ``static_gpus``.

The ledger's URL is not in it (it holds a password): ``GPULAB_LEDGER_URL``, from a secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_ENV = "GPULAB_QUOTA_FILE"
LEDGER_ENV = "GPULAB_LEDGER_URL"
KEYS = ("default_policy", "group_policies", "user_policies", "static_gpus",
        "static_telemetry_file", "gpu_pools")
POOL_KEYS = ("pool", "gpus", "name", "memory_gib", "mig_slices")


def read_quota_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in ``path`` (JSON, or YAML when the name ends in .yaml/.yml);
    ``ValueError`` naming the file and the bad key."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} must hold a mapping of GpulabQuota settings")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; accepted: {list(KEYS)}")
    settings = dict(data)
    if "gpu_pools" in settings:
        if "static_gpus" in settings:
            raise ValueError(f"{path}: give gpu_pools or static_gpus, not both")
        settings["static_gpus"] = _expand_pools(path, settings.pop("gpu_pools"))
    return settings


def _expand_pools(path: Path, pools: Any) -> list[dict[str, Any]]:
    from gpulab_hub.profile_resources import pool_inventory

    if not isinstance(pools, list):
        raise ValueError(f"{path}: gpu_pools must be a list of pools, not {pools!r}")
    entries: list[dict[str, Any]] = []
    for position, pool in enumerate(pools):
        where = f"{path}: gpu_pools[{position}]"
        if not isinstance(pool, Mapping):
            raise ValueError(f"{where} must be a mapping, not {pool!r}")
        unknown = sorted(set(pool) - set(POOL_KEYS))
        missing = [k for k in ("pool", "gpus", "name", "memory_gib") if k not in pool]
        if unknown or missing:
            raise ValueError(f"{where}: unknown {unknown}, missing {missing}; "
                             f"accepted: {list(POOL_KEYS)}")
        try:
            entries += pool_inventory(
                pool["pool"], pool["gpus"], name=pool["name"], memory_gib=pool["memory_gib"],
                mig_slices=pool.get("mig_slices"),
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return entries


def quota_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``GpulabQuota`` settings from ``GPULAB_QUOTA_FILE`` and ``GPULAB_LEDGER_URL``."""
    env = os.environ if env is None else env
    settings: dict[str, Any] = {}
    if env.get(FILE_ENV):
        settings.update(read_quota_file(env[FILE_ENV]))
    if env.get(LEDGER_ENV):
        settings["ledger_url"] = env[LEDGER_ENV]
    return settings


def apply_quota_settings(c: Any, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Set ``c.GpulabQuota.*`` from ``quota_settings(env)`` (a jupyterhub_config.py's
    ``c``); returns what was set."""
    settings = quota_settings(env)
    for key, value in settings.items():
        setattr(c.GpulabQuota, key, value)
    return settings
