"""start, list, get, scale, stop and connect: the cluster API that notebooks, the sidebar's
REST handlers and the launcher dashboard all call.

Every function works on any cluster of this server, whichever process runs it: a cluster
this process owns is driven directly, one owned by another process (a kernel, or the
Jupyter server) through its scheduler's control handlers (see ``owner``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import html
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from gpulab.clusters import owner as owners
from gpulab.clusters.limits import (
    ClusterLimitError,
    allocated_devices,
    check_workers,
    choose_devices,
    lease_devices,
    uses_server_devices,
    worker_limit,
)
from gpulab.clusters.local import build_local, make_security, security_from_json, security_to_json
from gpulab.clusters.progress import StartProgress, in_notebook
from gpulab.clusters.registry import ClusterNotFound, Registry, new_id, owner_identity
from gpulab.clusters.spec import MAX_WORKERS, ClusterSpec, SpecError
from gpulab.leases import LeaseBook, default_lease_file
from gpulab.quota.client import QuotaClient, QuotaServiceError

_FROM_ENV: Any = object()  # the default quota client: the hub's, when the env names one
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
PUBLIC_FIELDS = (
    "id",
    "name",
    "status",
    "error",
    "created",
    "owner",
    "workers_requested",
    "workers",
    "gpus",
    "spec",
    "scheduler_address",
)


class ClusterBusy(RuntimeError):
    """The cluster can't do that right now (still starting, already stopping)."""

    status = 409


class Cluster:
    """A handle on one cluster of this server: what its record says, plus the verbs."""

    def __init__(self, record: dict[str, Any], registry: Registry):
        self._record = record
        self._registry = registry

    # What it is --------------------------------------------------------------------------
    id = property(lambda self: self._record["id"])
    name = property(lambda self: self._record["name"])
    status = property(lambda self: self._record["status"])
    error = property(lambda self: self._record.get("error"))
    workers = property(lambda self: list(self._record.get("workers", [])))
    gpus = property(lambda self: list(self._record.get("gpus", [])))
    scheduler_address = property(lambda self: self._record.get("scheduler_address"))

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard as this user's browser reaches it: through the server's proxy
        under JupyterHub (behind the server's login), else straight to 127.0.0.1."""
        port = self._record.get("dashboard_port")
        if not port:
            return None
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        if prefix:
            return f"{prefix.rstrip('/')}/proxy/{port}/status"
        return f"http://127.0.0.1:{port}/status"

    def to_json(self) -> dict[str, Any]:
        """The record as the REST API shows it: no credentials, the dashboard as a path
        relative to the server's base URL."""
        public = {k: self._record.get(k) for k in PUBLIC_FIELDS}
        port = self._record.get("dashboard_port")
        public["dashboard_link"] = f"proxy/{port}/status" if port else None
        return public

    def refresh(self) -> Cluster:
        mine = owners.owned(self.id)
        if mine is not None:
            self._record = mine.record
        else:
            self._record = self._registry.read(self.id)
        return self

    def wait(self, timeout: float = START_TIMEOUT_SECONDS) -> Cluster:
        """Block until the cluster runs; raise its error if it failed to start."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.refresh()
            except ClusterNotFound:
                raise RuntimeError(f"cluster {self.name!r} stopped while starting") from None
            if self.status == "running":
                return self
            if self.status == "failed":
                raise RuntimeError(f"cluster {self.name!r} failed to start: {self.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster {self.name!r} is not running after {timeout} s")
            time.sleep(0.05)

    # Verbs --------------------------------------------------------------------------------
    def client(self, **kwargs: Any) -> Any:
        return connect(self.id, registry=self._registry, **kwargs)

    def scale(self, workers: int) -> Cluster:
        return scale(self, workers, registry=self._registry)

    def stop(self) -> None:
        stop(self, registry=self._registry)

    def __repr__(self) -> str:
        return (
            f"<gpulab Cluster {self.name!r} id={self.id} {self.status}: "
            f"{len(self.workers)}/{self._record.get('workers_requested')} workers"
            f"{', GPUs ' + ','.join(self.gpus) if self.gpus else ''}>"
        )

    def _repr_html_(self) -> str:
        link = self.dashboard_link
        dashboard = (
            f"<a href='{html.escape(link)}' target='_blank'>dashboard</a>"
            if link
            else "no dashboard"
        )
        return (
            f"<div><b>gpulab cluster {html.escape(self.name)}</b> "
            f"(<code>{html.escape(self.id)}</code>): {html.escape(self.status)}, "
            f"{len(self.workers)}/{self._record.get('workers_requested')} workers, "
            f"{len(self.gpus)} GPU(s), {dashboard}</div>"
        )


# Dask Gateway dispatch (issue #5) ------------------------------------------------------------
# With GPULAB_DASK_GATEWAY_ADDRESS set, each public function below hands over to the gateway
# backend (gateway.py) at its top; unset, the local code paths run unchanged.


def _gateway_backend(quota: Any = _FROM_ENV) -> Any:
    """The Dask Gateway backend when one is configured, else None."""
    from gpulab.clusters.gateway import GatewayBackend  # imports no dask_gateway itself

    return GatewayBackend.from_env(QuotaClient.from_env() if quota is _FROM_ENV else quota)


# start --------------------------------------------------------------------------------------


def _owner_kind() -> str:
    if os.environ.get("GPULAB_CLUSTER_OWNER"):
        return os.environ["GPULAB_CLUSTER_OWNER"]
    return "kernel" if in_notebook() else "process"


def start(
    spec: ClusterSpec | None = None,
    *,
    wait: bool = True,
    progress: bool | None = None,
    registry: Registry | None = None,
    quota: Any = _FROM_ENV,
    owner_kind: str | None = None,
    **fields: Any,
) -> Cluster:
    """Start a Dask cluster on this server's allocation and return its handle.

    ``clusters.start(workers=4)`` or ``clusters.start(ClusterSpec(...))``; see
    ``ClusterSpec`` for the fields. Refused with ``ClusterLimitError`` (nothing starts)
    when it would exceed the user's Dask-worker limit or this server's GPUs. With
    ``wait=False`` it returns once admitted, while the cluster starts (``.wait()``).
    Progress is shown while it starts (a bar in a notebook; ``progress=False`` hides it).
    """
    if spec is None:
        try:
            spec = ClusterSpec.build(**fields)
        except TypeError as e:  # an unknown keyword: say which fields exist
            raise SpecError(f"{e}; see help(gpulab.clusters.ClusterSpec)", field="spec") from None
    elif fields:
        raise SpecError("give either a ClusterSpec or fields, not both", field="spec")
    gateway = _gateway_backend(quota)  # Dask Gateway dispatch (issue #5)
    if gateway is not None:
        return gateway.start(spec, wait=wait, progress=progress)
    # dask-jobqueue SLURMCluster dispatch (issue #9): workers as Slurm jobs, the rest local.
    from gpulab.clusters import jobqueue

    slurm = jobqueue.SlurmSettings.from_env()
    if slurm is not None:
        return jobqueue.start(
            spec, slurm, wait=wait, progress=progress, registry=registry, owner_kind=owner_kind,
            quota=QuotaClient.from_env() if quota is _FROM_ENV else quota,
        )
    registry = registry or Registry()
    quota = QuotaClient.from_env() if quota is _FROM_ENV else quota
    name = spec.name or f"cluster-{len(registry.records()) + 1}"
    with registry.locked():
        live = _live(registry, quota)
        check_workers(spec.workers, live, worker_limit())
        allocated = allocated_devices() if spec.gpus else []
        devices = choose_devices(spec, allocated, live)
        cluster_id = new_id()
        # The server's own GPUs are shared with its kernels: lease them (see limits).
        book = LeaseBook(default_lease_file()) if devices and uses_server_devices() else None
        if book is not None:
            devices = lease_devices(book, spec, cluster_id, name, allocated, live)
        try:
            if quota is not None:
                try:
                    quota.admit_cluster(cluster_id, name, spec.workers, spec.gpus, devices)
                except QuotaServiceError as e:
                    raise owners._refusal(e) from None
            security = make_security(spec.protocol)
            record = new_record(cluster_id, name, spec, security, devices,
                                owner_kind or _owner_kind())
            registry.write(record)
        except BaseException:
            if book is not None:  # refused or broken before it started: nothing holds them
                book.release(cluster_id)
            raise
    owned = LeasedCluster(record, spec, registry, quota, book)
    owners.adopt(owned)
    return launch(
        owned, lambda o: build_local(spec, devices, security, [owners.RecordPlugin(o)]),
        f"gpulab-start-{cluster_id}", wait=wait, progress=progress,
    )


def launch(owned: owners.OwnedCluster, build: Callable[[Any], Any], thread_name: str, *,
           wait: bool, progress: Any) -> Cluster:
    """Start the recorded cluster on a thread of its own (every backend's); with ``wait``,
    return once it runs (or raise with its error), showing its progress unless
    ``progress`` is False."""
    thread = threading.Thread(
        target=_launch_quietly, args=(owned, build), name=thread_name, daemon=True
    )
    thread.start()
    handle = Cluster(owned.record, owned.registry)
    if not wait:
        return handle
    name, workers = owned.record["name"], owned.spec.workers
    show = StartProgress(name, workers) if progress is not False else None
    while not owned.ready.wait(0.05):
        if show is not None:
            show.update(_stage(owned), len(owned.record.get("workers", [])))
    thread.join()
    if owned.record["status"] != "running":
        if show is not None:
            show.update("failed", 0, force=True)
        raise RuntimeError(f"cluster {name!r} failed to start: {owned.record.get('error')}")
    if show is not None:
        show.update("running", len(owned.record["workers"]), force=True)
    return handle


class LeasedCluster(owners.OwnedCluster):
    """A cluster this process owns whose GPUs are leased in ``book`` (None: no lease): the
    lease goes when it stops or fails to start, wherever the stop came from (this process,
    the sidebar through the scheduler, the server shutting down). A killed owner's lease is
    dropped by the lease book itself, which drops leases of dead processes."""

    def __init__(self, record: dict[str, Any], spec: ClusterSpec, registry: Registry,
                 quota: QuotaClient | None, book: LeaseBook | None):
        super().__init__(record, spec, registry, quota)
        self.book = book

    def _teardown(self, reason: str, keep_record: bool = False) -> None:
        try:
            super()._teardown(reason, keep_record=keep_record)
        finally:
            if self.book is not None:
                self.book.release(self.id)


def _stage(owned: owners.OwnedCluster) -> str:
    return "starting workers" if owned.scheduler is not None else "starting scheduler"


def new_record(cluster_id: str, name: str, spec: Any, security: Any, gpus: list[str],
               owner_kind: str) -> dict[str, Any]:
    """A starting cluster's registry record (every backend's): what the sidebar lists."""
    return {
        "id": cluster_id,
        "name": name,
        "status": "starting",
        "error": None,
        "created": owners.now_iso(),
        "owner": {"kind": owner_kind, **owner_identity()},
        "workers_requested": spec.workers,
        "workers": [],
        "gpus": gpus,
        "spec": spec.to_json(),
        "scheduler_address": None,
        "dashboard_port": None,
        "security": security_to_json(security),
    }


def _launch_quietly(owned: owners.OwnedCluster, build: Callable[[Any], Any]) -> None:
    # The error is in the record (status "failed"); the caller reports it.
    with contextlib.suppress(BaseException):
        owned.launch(build)


def _live(registry: Registry, quota: QuotaClient | None) -> list[dict[str, Any]]:
    """This server's clusters whose owner runs; stale records are dropped (and their
    ledger rows closed) on the way."""
    live, stale = registry.live()
    for record in stale:
        registry.remove(record["id"])
        if quota is not None:
            # Unreachable now: the service closes the row when the server stops anyway.
            with contextlib.suppress(QuotaServiceError):
                quota.release_cluster(record["id"])
    return live


# list / get --------------------------------------------------------------------------------


def list_clusters(*, registry: Registry | None = None, quota: Any = _FROM_ENV) -> list[Cluster]:
    """Every running, starting or failed cluster of this server, from any of its processes."""
    gateway = _gateway_backend(quota)  # Dask Gateway dispatch (issue #5)
    if gateway is not None:
        return gateway.list()
    registry = registry or Registry()
    quota = QuotaClient.from_env() if quota is _FROM_ENV else quota
    return [Cluster(record, registry) for record in _live(registry, quota)]


def get(cluster_id: str, *, registry: Registry | None = None) -> Cluster:
    gateway = _gateway_backend()  # Dask Gateway dispatch (issue #5)
    if gateway is not None:
        return gateway.get(cluster_id)
    registry = registry or Registry()
    mine = owners.owned(cluster_id)
    if mine is not None:
        return Cluster(mine.record, registry)
    for record in registry.live()[0]:
        if record["id"] == cluster_id:
            return Cluster(record, registry)
    raise ClusterNotFound(cluster_id)


def _resolve(cluster: Cluster | str, registry: Registry | None) -> Cluster:
    return get(cluster.id if isinstance(cluster, Cluster) else cluster, registry=registry)


# scale / stop ------------------------------------------------------------------------------


def scale(cluster: Cluster | str, workers: int, *, registry: Registry | None = None) -> Cluster:
    """Scale to ``workers`` workers; more workers meet the same limits as a new cluster."""
    if (
        not isinstance(workers, int)
        or isinstance(workers, bool)
        or not (0 <= workers <= MAX_WORKERS)
    ):
        raise SpecError(
            f"workers must be a whole number from 0 to {MAX_WORKERS}, got {workers!r}",
            field="workers",
        )
    gateway = _gateway_backend()  # Dask Gateway dispatch (issue #5)
    if gateway is not None:
        return gateway.scale(cluster, workers)
    handle = _resolve(cluster, registry)
    if handle.status != "running":
        raise ClusterBusy(
            f"cluster {handle.name!r} is {handle.status}; it can be scaled once it runs"
        )
    registry = handle._registry
    with registry.locked():
        others = [r for r in registry.live()[0] if r["id"] != handle.id]
        check_workers(workers, others, worker_limit())
        mine = owners.owned(handle.id)
        if mine is not None:
            mine.scale(workers)
        else:
            answer = _scheduler_call(handle._record, "gpulab_scale", workers=workers)
            if not answer.get("ok"):
                raise ClusterLimitError.from_json(answer.get("error", {}))
    return handle.refresh()


def stop(
    cluster: Cluster | str,
    *,
    registry: Registry | None = None,
    timeout: float = STOP_TIMEOUT_SECONDS,
) -> None:
    """Stop the cluster and its workers; its GPUs and workers go back to the allowance."""
    gateway = _gateway_backend()  # Dask Gateway dispatch (issue #5)
    if gateway is not None:
        return gateway.stop(cluster)
    handle = _resolve(cluster, registry)
    mine = owners.owned(handle.id)
    if mine is not None:
        mine.close()
        return
    if handle.status == "failed":  # nothing runs: dismiss the record
        handle._registry.remove(handle.id)
        return
    if not handle.scheduler_address:
        raise ClusterBusy(f"cluster {handle.name!r} is still starting; stop it once it runs")
    _scheduler_call(handle._record, "gpulab_stop")
    deadline = time.monotonic() + timeout
    while handle._registry.path(handle.id).exists() or _leased(handle):
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster {handle.name!r} did not stop within {timeout} s")
        time.sleep(0.05)


def _leased(handle: Cluster) -> bool:
    """True while a GPU cluster's lease is in the lease book: its owner releases it just
    after removing the record, and a kernel started right after ``stop`` must find it free."""
    if not handle.gpus:
        return False
    return any(x.kernel_id == handle.id for x in LeaseBook(default_lease_file()).leases())


def close_owned() -> int:
    """Stop the clusters this process runs (the Jupyter server calls it as it stops)."""
    return owners.close_owned()


atexit.register(close_owned)


# connect -----------------------------------------------------------------------------------


def connect(
    cluster_id: str | None = None, *, registry: Registry | None = None, **client_kwargs: Any
) -> Any:
    """A ``distributed.Client`` for a cluster of this server (started anywhere: this
    notebook, another one, or the sidebar). Without an id: the only cluster running."""
    gateway = _gateway_backend()  # Dask Gateway dispatch (issue #5)
    if gateway is not None:
        return gateway.connect(cluster_id, **client_kwargs)
    from distributed import Client

    registry = registry or Registry()
    if cluster_id is None:
        handle = the_only_one(list_clusters(registry=registry))
    else:
        handle = get(cluster_id, registry=registry)
    handle.wait()
    record = handle._record
    return Client(
        record["scheduler_address"],
        security=security_from_json(record["security"]),
        **client_kwargs,
    )


def the_only_one(handles: list[Cluster]) -> Cluster:
    """The one cluster running, for ``connect()`` without an id; else say which run."""
    running = [c for c in handles if c.status != "failed"]
    if len(running) != 1:
        names = ", ".join(f"{c.name!r} ({c.id})" for c in running) or "none"
        raise ClusterNotFound(
            "", f"connect() without an id needs exactly one cluster; running: {names}"
        )
    return running[0]


def _scheduler_call(record: dict[str, Any], op: str, **kwargs: Any) -> Any:
    """Call one of the owner's control handlers on the cluster's scheduler."""
    from distributed.core import rpc

    security = security_from_json(record.get("security"))
    args = security.get_connection_args("client") if security is not None else {}

    async def call() -> Any:
        async with rpc(record["scheduler_address"], connection_args=args, timeout=10) as remote:
            return await getattr(remote, op)(**kwargs)

    # A fresh loop on its own thread: works in a kernel (whose thread runs a loop already)
    # and in the server's executor threads alike.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call()).result()
