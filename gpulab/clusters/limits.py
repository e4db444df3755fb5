"""The limits a cluster request meets before anything starts: the server's GPUs and the
user's Dask-worker limit.

Two layers: this server's own records (which of its GPUs are free, how many workers its
clusters run) decide at once and name the clusters in the way; the hub's quota service
then decides for all of the user's servers together and records the cluster in the ledger.

The server's GPUs are shared with its kernels: a GPU cluster started with the server's
whole allocation (from the sidebar, the launcher, a terminal) leases its devices in the
lease book the kernel provisioner uses (``gpulab.leases``), so it gets only devices no
kernel holds and no kernel gets one of its devices. A cluster started in a GPU kernel uses
that kernel's lease.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from gpulab.clusters.spec import ClusterSpec
from gpulab.leases import CLUSTER, LeaseBook, LeaseRequest, NoFreeGPU, free_them


class ClusterLimitError(Exception):
    """A request over a limit: nothing was started.

    ``reason`` is the limit (``max_dask_workers``, ``gpus``), ``limit`` its value and
    ``in_use`` what the user's clusters hold now; the message says all three.
    """

    status = 403

    def __init__(self, message: str, *, reason: str, limit: int | None = None,
                 in_use: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.limit = limit
        self.in_use = in_use

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "reason": self.reason, "limit": self.limit,
                "in_use": self.in_use}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ClusterLimitError:
        return cls(str(body.get("message", "refused by the quota service")),
                   reason=str(body.get("reason", "quota")), limit=body.get("limit"),
                   in_use=body.get("in_use"))


def allocated_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs (or MIG slices) this server was given, by id.

    gpulab's spawner sets ``GPULAB_ALLOCATED_DEVICES``; elsewhere ``CUDA_VISIBLE_DEVICES``
    says what this process may use. With neither set (a plain machine, no hub), every GPU
    that NVML reports is ours.
    """
    env = os.environ if env is None else env
    for name in ("GPULAB_ALLOCATED_DEVICES", "CUDA_VISIBLE_DEVICES"):
        if name in env:
            return [d.strip() for d in env[name].split(",") if d.strip()]
    from gpulab.gpus import detect_inventory

    return [gpu.uuid for gpu in detect_inventory().devices()]


def worker_limit(env: Mapping[str, str] | None = None) -> int | None:
    """The policy's Dask workers at once, as the spawner passed it (None: no limit known)."""
    env = os.environ if env is None else env
    raw = env.get("GPULAB_MAX_DASK_WORKERS", "").strip()
    if not raw:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"GPULAB_MAX_DASK_WORKERS must be a whole number, got {raw!r}") from None


def _names(records: Sequence[Mapping[str, Any]], count: Any) -> str:
    parts = [f"cluster {r.get('name') or r['id']!r}: {count(r)}" for r in records if count(r)]
    return f" ({', '.join(parts)})" if parts else ""


def check_workers(spec_workers: int, others: Sequence[Mapping[str, Any]],
                  limit: int | None) -> None:
    """Refuse when this server's other clusters plus ``spec_workers`` exceed ``limit``."""
    if limit is None:
        return
    in_use = sum(int(r.get("workers_requested", 0)) for r in others)
    if in_use + spec_workers > limit:
        raise ClusterLimitError(
            f"Dask workers: this cluster asks for {spec_workers} but your limit is {limit} "
            f"at once and {in_use} {'is' if in_use == 1 else 'are'} in use"
            f"{_names(others, lambda r: r.get('workers_requested', 0))}. "
            "Stop or scale down a cluster, or ask for fewer workers.",
            reason="max_dask_workers", limit=limit, in_use=in_use,
        )


def choose_devices(spec: ClusterSpec, allocated: Sequence[str],
                   others: Sequence[Mapping[str, Any]]) -> list[str]:
    """The GPUs for a new cluster: free ones of this server's allocation, in its order."""
    if spec.gpus == 0:
        return []
    if not allocated:
        raise ClusterLimitError(
            f"GPUs: this cluster asks for {spec.gpus} GPU(s) but this server has none "
            "(a CPU session). Start your server with a GPU profile, or use gpus_per_worker=0.",
            reason="gpus", limit=0, in_use=0,
        )
    taken = {d for r in others for d in r.get("gpus", [])}
    free = [d for d in allocated if d not in taken]
    if spec.gpus > len(free):
        raise ClusterLimitError(
            f"GPUs: this cluster asks for {spec.gpus} but this server has {len(allocated)} "
            f"and {len(taken)} {'is' if len(taken) == 1 else 'are'} used"
            f"{_names(others, lambda r: len(r.get('gpus', [])))}. "
            "Stop a GPU cluster, or ask for fewer GPU workers.",
            reason="gpus", limit=len(allocated), in_use=len(taken),
        )
    return free[: spec.gpus]


def uses_server_devices(env: Mapping[str, str] | None = None) -> bool:
    """True when this process's GPUs are the server's allocation (the Jupyter server, a
    terminal), so its GPU clusters lease them; False in a kernel started by gpulab's
    provisioner (which sets ``GPULAB_SERVER_DEVICES``), whose GPUs are its lease already."""
    env = os.environ if env is None else env
    return "GPULAB_SERVER_DEVICES" not in env


def lease_devices(book: LeaseBook, spec: ClusterSpec, cluster_id: str, name: str,
                  allocated: Sequence[str], others: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lease the GPUs of a new cluster in ``book``, as a holder of kind "cluster" that lives
    as long as this process: free ones of ``allocated`` that no other cluster of this server
    uses (``others``) and no kernel or cluster holds. Refused, leasing nothing, with a
    ClusterLimitError naming the holders."""
    taken = {d: r for r in others for d in r.get("gpus", [])}
    try:
        lease = book.acquire(cluster_id, LeaseRequest(gpus=spec.gpus),
                             [d for d in allocated if d not in taken], kind=CLUSTER,
                             pid=os.getpid(), session=name)
    except NoFreeGPU as e:
        holders = []
        for device in allocated:
            if e.held_by.get(device):
                holders.append(f"{device} held by "
                               + "; ".join(h.describe() for h in e.held_by[device]))
            elif device in taken:
                record = taken[device]
                holders.append(f"{device} used by cluster {record.get('name') or record['id']!r}")
        free = len(allocated) - len(holders)
        raise ClusterLimitError(
            f"GPUs: this cluster asks for {spec.gpus} but {free} of this server's "
            f"{len(allocated)} {'is' if free == 1 else 'are'} free: {'; '.join(holders)}. "
            f"{free_them(e.held_by) if e.held_by else 'Stop a GPU cluster'}, or ask for "
            "fewer GPU workers.",
            reason="gpus", limit=len(allocated), in_use=len(holders),
        ) from None
    return lease.devices
