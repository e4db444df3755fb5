"""The process that runs a cluster: it starts it, keeps its record current, and answers
scale and stop requests from the server's other processes.

Control goes through the cluster's own scheduler: the owner adds two handlers to it
(``gpulab_scale``, ``gpulab_stop``), so the sidebar can scale a cluster a notebook started,
over the same TLS connection a Dask client uses, and nothing else has to listen anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from gpulab.clusters.limits import ClusterLimitError
from gpulab.clusters.registry import Registry
from gpulab.clusters.spec import ClusterSpec
from gpulab.quota.client import QuotaClient, QuotaServiceError

log = logging.getLogger("gpulab.clusters")

# Clusters this process owns, by id: kept alive here (a notebook may drop its handle)
# and closed at exit or by close_owned() when the Jupyter server stops.
OWNED: dict[str, OwnedCluster] = {}
_OWNED_LOCK = threading.Lock()
STOP_WAIT_SECONDS = 120.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RecordPlugin(SchedulerPlugin):
    """Writes the cluster's workers into its record as they join and leave, and installs
    the control handlers on the scheduler."""

    name = "gpulab-record"

    def __init__(self, owned: OwnedCluster):
        self.owned = owned

    async def start(self, scheduler) -> None:
        scheduler.handlers["gpulab_scale"] = self.owned.handle_scale
        scheduler.handlers["gpulab_stop"] = self.owned.handle_stop
        self.owned.scheduler = scheduler

    def add_worker(self, scheduler, worker: str) -> None:
        self.owned.workers_changed()

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        self.owned.workers_changed()


class OwnedCluster:
    """One cluster run by this process, and its record."""

    def __init__(
        self,
        record: dict[str, Any],
        spec: ClusterSpec,
        registry: Registry,
        quota: QuotaClient | None,
    ):
        self.record = record
        self.spec = spec
        self.registry = registry
        self.quota = quota
        self.cluster: Any = None
        self.scheduler: Any = None
        self.security: Any = None
        self.ready = threading.Event()
        self.closed = threading.Event()
        self._write_lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.record["id"]

    # The record -----------------------------------------------------------------------

    def save(self, **changes: Any) -> None:
        with self._write_lock:
            if self.closed.is_set() and changes.get("status") != "stopped":
                return
            self.record.update(changes)
            if self.record["status"] != "stopped":
                self.registry.write(self.record)

    def workers_changed(self) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        devices = self.record["gpus"]
        workers = []
        for address, ws in sorted(scheduler.workers.items(), key=lambda kv: str(kv[1].name)):
            device = None
            if devices:
                with contextlib.suppress(ValueError, TypeError, IndexError):
                    device = devices[int(ws.name)]
            workers.append(
                {
                    "name": str(ws.name),
                    "address": address,
                    "nthreads": ws.nthreads,
                    "memory_limit": ws.memory_limit,
                    "device": device,
                }
            )
        self.save(workers=workers)

    # Start ------------------------------------------------------------------------------

    def launch(self, build: Callable[[OwnedCluster], Any]) -> None:
        """Start the cluster (blocking); the record says running or failed when it returns."""
        try:
            self.cluster = build(self)
            if self.closed.is_set():  # stopped while it was starting
                self.cluster.close(timeout=20)
                return
            self.record["scheduler_address"] = self.cluster.scheduler_address
            port = _dashboard_port(self.cluster)
            self.save(scheduler_address=self.cluster.scheduler_address, dashboard_port=port)
            self._wait_for_workers(self.spec.workers)
            self.workers_changed()
            self.save(status="running")
        except BaseException as e:
            log.warning("cluster %s failed to start: %s", self.id, e)
            self.save(status="failed", error=f"{type(e).__name__}: {e}")
            # The failed record stays listed (with its error) until the user dismisses it.
            self._teardown(reason="failed to start", keep_record=True)
            raise
        finally:
            self.ready.set()

    def _wait_for_workers(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.cluster.scheduler.workers) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.cluster.scheduler.workers)} of {n} workers "
                    f"started within {timeout:.0f} s"
                )
            time.sleep(0.02)

    # Control (also reached through the scheduler's handlers) ------------------------------

    def scale(self, workers: int) -> None:
        if self.record["status"] not in ("running", "starting"):
            raise ClusterLimitError(
                f"cluster {self.record['name']!r} is {self.record['status']}", reason="status"
            )
        if self.spec.gpus_per_worker and workers > len(self.record["gpus"]):
            raise ClusterLimitError(
                f"GPUs: this cluster has {len(self.record['gpus'])} GPU(s), one per worker; "
                f"it can't scale to {workers} workers. Start a new cluster for more GPUs.",
                reason="gpus",
                limit=len(self.record["gpus"]),
                in_use=len(self.record["gpus"]),
            )
        if self.quota is not None and workers > self.record["workers_requested"]:
            try:
                self.quota.scale_cluster(self.id, workers)
            except QuotaServiceError as e:
                raise _refusal(e) from None
        self.cluster.scale(workers)
        if self.quota is not None and workers < self.record["workers_requested"]:
            with contextlib.suppress(QuotaServiceError):  # fewer is always allowed
                self.quota.scale_cluster(self.id, workers)
        self.save(workers_requested=workers)

    async def handle_scale(self, workers: int) -> dict[str, Any]:
        try:
            await asyncio.to_thread(self.scale, workers)
        except ClusterLimitError as e:
            return {"ok": False, "error": e.to_json()}
        return {"ok": True}

    def handle_stop(self) -> dict[str, Any]:
        # Called on the scheduler's own event loop: closing waits on that loop, so it
        # happens on another thread and this answers at once.
        threading.Thread(target=self.close, name=f"gpulab-stop-{self.id}", daemon=True).start()
        return {"ok": True}

    def close(self, reason: str = "stopped") -> None:
        if self.closed.is_set():  # a failed cluster, dismissed
            self.registry.remove(self.id)
            with _OWNED_LOCK:
                OWNED.pop(self.id, None)
            return
        # A cluster stopped while starting is closed once its start returns (see launch).
        self.ready.wait(STOP_WAIT_SECONDS)
        self.save(status="stopping")
        self._teardown(reason=reason)

    def _teardown(self, reason: str, keep_record: bool = False) -> None:
        self.closed.set()
        try:
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close(timeout=20)
        finally:
            if not keep_record:
                self.registry.remove(self.id)
                self.save(status="stopped")
                with _OWNED_LOCK:
                    OWNED.pop(self.id, None)
            if self.quota is not None:
                try:
                    self.quota.release_cluster(self.id)
                except QuotaServiceError as e:
                    log.warning("cluster %s: the ledger was not told it %s: %s", self.id, reason, e)


def adopt(owned: OwnedCluster) -> None:
    with _OWNED_LOCK:
        OWNED[owned.id] = owned


def owned(cluster_id: str) -> OwnedCluster | None:
    with _OWNED_LOCK:
        return OWNED.get(cluster_id)


def close_owned() -> int:
    """Close every cluster this process runs (the Jupyter server stopping, or exit)."""
    with _OWNED_LOCK:
        mine = list(OWNED.values())
    for cluster in mine:
        cluster.close(reason="server stopped")
    return len(mine)


def _refusal(error: QuotaServiceError) -> Exception:
    if error.status in (403, 409):
        return ClusterLimitError.from_json(error.body)
    return error


def _dashboard_port(cluster: Any) -> int | None:
    services = getattr(cluster.scheduler, "services", {}) or {}
    dashboard = services.get("dashboard")
    return getattr(dashboard, "port", None) if dashboard is not None else None
