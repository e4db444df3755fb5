"""Prometheus metrics of the quota service, rendered from the ledger at each scrape.

Label cardinality stays bounded: admissions are labelled by result and a short reason
code, usage and open Dask workers by JupyterHub group (a user in several groups counts
under the first, by name; users in none under "none"), never by user or device.
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
        totals = by_group.setdefault(_group_of(service, user), [0.0, 0.0])
        totals[0] += seconds
        totals[1] += joules
    for group, (seconds, joules) in by_group.items():
        gpu_seconds.labels(group).set(seconds)
        energy.labels(group).set(joules)

    open_clusters = quota.ledger.open_clusters()
    Gauge("gpulab_dask_clusters", "Dask clusters open now", registry=registry).set(
        len(open_clusters)
    )
    dask_workers = Gauge(
        "gpulab_dask_workers",
        "Dask workers of open clusters, by group",
        ["group"],
        registry=registry,
    )
    workers_by_group: dict[str, int] = {}
    for cluster in open_clusters:
        group = _group_of(service, cluster.user)
        workers_by_group[group] = workers_by_group.get(group, 0) + cluster.workers
    for group, workers in workers_by_group.items():
        dask_workers.labels(group).set(workers)
    return generate_latest(registry)


def _group_of(service, user: str) -> str:
    groups = sorted(service.groups.get(user, []))
    return groups[0] if groups else "none"
