"""Quota reports as the API shows them: one user's quota, and everyone's usage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpulab.quota.ledger import Ledger
from gpulab.quota.policy import Policy


def user_report(ledger: Ledger, name: str, policy: Policy, warnings: Iterable) -> dict:
    """What ``name`` may use, has used in the policy's window, holds now (allocations and
    Dask clusters), and is warned of."""
    usage = ledger.usage(name, since_seconds_ago=policy.window_seconds)
    clusters = ledger.open_clusters(name)
    budget_left = None
    if policy.gpu_hours is not None:
        budget_left = (policy.gpu_hours * 3600 - usage.gpu_seconds) / 3600
    return {
        "user": name,
        "limits": policy.to_json(),
        "usage": {
            "window_seconds": policy.window_seconds,
            "gpu_seconds": usage.gpu_seconds,
            "gpu_hours": usage.gpu_seconds / 3600,
            "energy_joules": usage.energy_joules,
            "gpus_held": usage.open_gpus,
        },
        "budget_left_gpu_hours": budget_left,
        "allocations": [
            {
                "id": a.id,
                "server": a.server,
                "gpus": a.gpus,
                "devices": list(a.device_uuids),
                "granted_at": a.granted_at.isoformat(),
            }
            for a in ledger.open_allocations(name)
        ],
        "warnings": [w.to_json() for w in warnings],
        "clusters": [c.to_json() for c in clusters],
        "dask_workers": {
            "limit": policy.max_dask_workers,
            "in_use": sum(c.workers for c in clusters),
        },
    }


def usage_report(ledger: Ledger, since_seconds: float, groups: Mapping[str, list[str]]) -> dict:
    """GPU-seconds, energy and GPUs held of everyone who held an allocation in the period,
    and the GPU-seconds and energy of each group."""
    users = sorted({a.user for a in ledger.allocations_since(since_seconds)})
    by_user = {}
    for name in users:
        usage = ledger.usage(name, since_seconds_ago=since_seconds)
        by_user[name] = {
            "gpu_seconds": usage.gpu_seconds,
            "energy_joules": usage.energy_joules,
            "gpus_held": usage.open_gpus,
            "groups": list(groups.get(name, [])),
        }
    # By group too: a user counts in each of their groups (group totals may overlap).
    by_group: dict[str, dict[str, float]] = {}
    for row in by_user.values():
        for group in row["groups"] or ["(no group)"]:
            totals = by_group.setdefault(group, {"gpu_seconds": 0.0, "energy_joules": 0.0})
            totals["gpu_seconds"] += row["gpu_seconds"]
            totals["energy_joules"] += row["energy_joules"]
    return {"since_seconds": since_seconds, "users": by_user, "groups": by_group}
