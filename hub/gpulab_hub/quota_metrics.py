"""Prometheus metrics of the quota service, rendered from the ledger at each scrape.

Label cardinality stays bounded: admissions are labelled by result and a short reason
code, usage by JupyterHub group (a user in several groups counts under the first, by
name; users in none under "none"), never by user or device.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest


def render_metrics(service) -> bytes:
    quota = service.quota
    registry = CollectorRegistry()
    devices = quota.device_uuids()
    open_allocations = quota.ledger.open_allocations()
    Gauge("gpulab_gpus_total", "GPUs of this node", registry=registry).set(len(devices))
    Gauge("gpulab_gpus_allocated", "GPUs held by servers now", registry=registry).set(
        sum(a.gpus for a in open_allocations)
    )
    Gauge("gpulab_servers_admitted", "Servers holding an allocation now", registry=registry).set(
        len(open_allocations)
    )
    admissions = Gauge(
        "gpulab_admissions_total",
        "Admission decisions recorded in the ledger",
        ["result", "reason"],
        registry=registry,
    )
    for (action, reason), count in quota.ledger.decision_counts().items():
        admissions.labels(action, reason or "").set(count)

    gpu_seconds = Gauge(
        "gpulab_gpu_seconds_total", "GPU-seconds accrued, by group", ["group"], registry=registry
    )
    energy = Gauge(
        "gpulab_energy_joules_total", "Energy drawn by GPUs, by group", ["group"], registry=registry
    )
    by_group: dict[str, list[float]] = {}
    for user, (seconds, joules) in quota.ledger.totals_by_user().items():
        groups = sorted(service.groups.get(user, []))
        totals = by_group.setdefault(groups[0] if groups else "none", [0.0, 0.0])
        totals[0] += seconds
        totals[1] += joules
    for group, (seconds, joules) in by_group.items():
        gpu_seconds.labels(group).set(seconds)
        energy.labels(group).set(joules)
    return generate_latest(registry)
