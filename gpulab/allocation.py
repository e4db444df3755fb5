"""This server's allocation as its user sees it: the GPUs with live readings of those
devices only, the GPU-hour budget, session time left, warnings and Dask workers.

The sidebar's allocation card shows it (``GET /gpulab/allocation``) and a notebook can
print it (``gpulab.allocation.describe()``). The quota part comes from the hub's quota
service with the server's own token; outside gpulab's hub it is None.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gpulab.clusters.limits import allocated_devices, worker_limit
from gpulab.gpus import GPU, Inventory, InventoryError, detect_inventory
from gpulab.quota.client import QuotaClient, QuotaServiceError

MIB = 1024 * 1024
_FROM_ENV: Any = object()


def gpus(devices: list[str], inventory: Inventory | None = None,
         described: Mapping[str, GPU] | None = None) -> list[dict[str, Any]]:
    """Name, memory and a live reading of each allocated device (and of no other).

    ``described``: the hub's description of the devices (``GPULAB_GPU_INFO``), used where
    this node's own inventory doesn't know a device (a static inventory: no NVML here).
    """
    if not devices:
        return []
    inventory = inventory or detect_inventory()
    try:
        known = {gpu.uuid: gpu for gpu in inventory.devices()}
        readings = inventory.telemetry(devices)
    except InventoryError:
        known, readings = {}, {}
    known = {**(described or {}), **known}
    result = []
    for device in devices:
        gpu, reading = known.get(device), readings.get(device)
        used = getattr(reading, "memory_used_bytes", None)
        result.append(
            {
                "id": device,
                "name": gpu.name if gpu else device,
                "memory_total_mib": round(gpu.memory_bytes / MIB) if gpu else None,
                "memory_used_mib": None if used is None else round(used / MIB),
                "utilization_pct": getattr(reading, "utilization_percent", None),
                "power_watts": getattr(reading, "power_watts", None),
            }
        )
    return result


def described_by_hub(env: Mapping[str, str]) -> dict[str, GPU]:
    """The devices as the hub described them to this server (``GPULAB_GPU_INFO``)."""
    try:
        entries = json.loads(env.get("GPULAB_GPU_INFO") or "[]")
        return {e["uuid"]: GPU(**e) for e in entries}
    except (ValueError, TypeError, KeyError):
        return {}  # a malformed hint only costs the names


def quota_summary(
    me: Mapping[str, Any], server: str, now: datetime | None = None
) -> dict[str, Any]:
    """The quota service's ``api/me`` answer, cut to what this server's user watches."""
    now = now or datetime.now(UTC)
    limits = me.get("limits", {})
    usage = me.get("usage", {})
    session_left = None
    if limits.get("max_session_seconds") is not None:
        for allocation in me.get("allocations", []):
            if allocation.get("server") == server and allocation.get("gpus"):
                granted = datetime.fromisoformat(allocation["granted_at"])
                if granted.tzinfo is None:
                    granted = granted.replace(tzinfo=UTC)
                elapsed = (now - granted).total_seconds()
                session_left = max(0.0, limits["max_session_seconds"] - elapsed)
    return {
        "gpu_hours_used": usage.get("gpu_hours", 0.0),
        "gpu_hours_limit": limits.get("gpu_hours"),
        "gpu_hours_left": me.get("budget_left_gpu_hours"),
        "window": limits.get("window"),
        "session_seconds_left": session_left,
        "warnings": [
            w.get("message", "")
            for w in me.get("warnings", [])
            if w.get("server") in (server, None)
        ],
    }


def describe(
    env: Mapping[str, str] | None = None,
    *,
    quota: Any = _FROM_ENV,
    inventory: Inventory | None = None,
) -> dict[str, Any]:
    """The allocation card's data (see the module docstring)."""
    env = os.environ if env is None else env
    quota = QuotaClient.from_env(env) if quota is _FROM_ENV else quota
    server = env.get("JUPYTERHUB_SERVER_NAME", "")
    summary, workers, error = None, {"limit": _env_limit(env), "in_use": None}, None
    if quota is not None:
        try:
            me = quota.me()
        except QuotaServiceError as e:
            error = str(e)
        else:
            summary = quota_summary(me, server)
            workers = me.get("dask_workers", workers)
    return {
        "user": env.get("JUPYTERHUB_USER") or _login_name(),
        "server": server,
        "gpus": gpus(allocated_devices(env), inventory, described_by_hub(env)),
        "quota": summary,
        "quota_error": error,
        "dask_workers": workers,
    }


def _env_limit(env: Mapping[str, str]) -> int | None:
    # The card shows "no limit known" rather than fail on a value the spawner didn't write.
    try:
        return worker_limit(env)
    except ValueError:
        return None


def _login_name() -> str:
    import getpass

    return getpass.getuser()
