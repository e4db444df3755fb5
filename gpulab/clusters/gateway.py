"""Dask clusters through a Dask Gateway server, when one is configured (at scale).

With ``GPULAB_DASK_GATEWAY_ADDRESS`` set (the gateway's URL, e.g.
``https://gateway.example.org``), ``gpulab.clusters.start``, ``list``, ``get``, ``scale``,
``stop`` and ``connect`` (and so the sidebar) create and manage the user's clusters at that
gateway instead of on this machine; unset, nothing here runs and ``dask_gateway`` is never
imported. ``GPULAB_DASK_GATEWAY_PROXY_ADDRESS`` names the gateway's scheduler proxy when it
is not at the same address; ``GPULAB_DASK_GATEWAY_AUTH`` is ``jupyterhub`` (the default: the
server's ``JUPYTERHUB_API_TOKEN``, for a gateway behind the same hub) or ``basic``
(``GPULAB_DASK_GATEWAY_USER`` and ``GPULAB_DASK_GATEWAY_PASSWORD``). A ``ClusterSpec``
becomes the gateway's cluster options (``threads_per_worker`` -> ``worker_cores``,
``memory_limit`` -> ``worker_memory`` in GiB, ``gpus_per_worker``, and ``rmm_pool_size``
and ``device_memory_limit`` under their own names), passed only where the gateway declares
the option: a field set to something the gateway does not offer is refused with
``SpecError`` naming it, never dropped. ``workers`` is the scale. The user's Dask-worker
limit still applies, counting the workers of all their gateway clusters (the gateway lists
only the caller's), and under gpulab's hub each cluster is admitted, scaled and released
in the quota service's ledger (key: the gateway's cluster name, made to fit the ledger's
key rule; no GPUs of this server: a gateway cluster's GPUs are the gateway's). A cluster
outlives the process that started it (the gateway runs it); its id is the gateway's
cluster name, its dashboard the gateway's absolute URL.

What gpulab knows about a cluster beyond the gateway's report (its name, spec, workers
asked for) lives on the cluster's own scheduler (``set_metadata`` under ``"gpulab"``), so
every process of the user sees the same; the scheduler also says which workers run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from gpulab.clusters.limits import ClusterLimitError, check_workers, worker_limit
from gpulab.clusters.manager import (
    PUBLIC_FIELDS,
    START_TIMEOUT_SECONDS,
    Cluster,
    ClusterBusy,
    the_only_one,
)
from gpulab.clusters.owner import _refusal, now_iso
from gpulab.clusters.progress import StartProgress
from gpulab.clusters.registry import ClusterNotFound
from gpulab.clusters.spec import ClusterSpec, SpecError
from gpulab.quota.client import QuotaClient, QuotaServiceError

log = logging.getLogger("gpulab.clusters")

ADDRESS_ENV = "GPULAB_DASK_GATEWAY_ADDRESS"
PROXY_ENV = "GPULAB_DASK_GATEWAY_PROXY_ADDRESS"
AUTH_ENV = "GPULAB_DASK_GATEWAY_AUTH"
USER_ENV = "GPULAB_DASK_GATEWAY_USER"
PASSWORD_ENV = "GPULAB_DASK_GATEWAY_PASSWORD"
AUTH_KINDS = ("jupyterhub", "basic")

# A gateway cluster's name: dask-gateway's uuid4().hex, after "<namespace>." on Kubernetes.
# Nothing else is ever put into a gateway URL (no path or query injection through an id).
ID_PATTERN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)?[0-9a-f]{32}")
LEDGER_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]")
METADATA_KEY = "gpulab"
SCHEDULER_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.2
STATUSES = {  # the gateway's cluster status -> gpulab's
    "PENDING": "starting",
    "RUNNING": "running",
    "STOPPING": "stopping",
    "STOPPED": "stopped",
    "FAILED": "failed",
}


class GatewayError(RuntimeError):
    """The gateway could not be reached, or refused this server's credentials."""


def check_id(cluster_id: Any) -> str:
    """``cluster_id`` if it is a gateway cluster name, else ``ClusterNotFound``."""
    if not isinstance(cluster_id, str) or not ID_PATTERN.fullmatch(cluster_id):
        raise ClusterNotFound(str(cluster_id)[:40])
    return cluster_id


def ledger_key(cluster_id: str) -> str:
    """The quota ledger's key for a gateway cluster (1 to 64 of ``A-Za-z0-9_-``): its name
    with the namespace's dot made a '-', the unique tail kept when that is too long."""
    return LEDGER_KEY_BAD.sub("-", check_id(cluster_id))[-64:]


# Configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway is and how this server signs in (from the environment)."""

    address: str
    proxy_address: str | None = None
    auth: str = "jupyterhub"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig | None:
        """The configured gateway, None when ``GPULAB_DASK_GATEWAY_ADDRESS`` is unset;
        a ``ValueError`` naming the variable for a bad value."""
        env = os.environ if env is None else env
        address = env.get(ADDRESS_ENV, "").strip()
        if not address:
            return None
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{ADDRESS_ENV} must be the gateway's http(s) URL, such as "
                f"https://gateway.example.org, not {address!r}"
            )
        proxy = env.get(PROXY_ENV, "").strip() or None
        if proxy is not None and not re.fullmatch(
            r"((gateway|tls)://)?[A-Za-z0-9.-]+:[0-9]{1,5}", proxy
        ):
            raise ValueError(
                f"{PROXY_ENV} must be the scheduler proxy's HOST:PORT (or gateway://HOST:PORT), "
                f"not {proxy!r}"
            )
        auth = env.get(AUTH_ENV, "").strip().lower() or "jupyterhub"
        if auth not in AUTH_KINDS:
            raise ValueError(f"{AUTH_ENV} must be one of {', '.join(AUTH_KINDS)}, not {auth!r}")
        if auth == "basic":
            user = env.get(USER_ENV, "").strip()
            if not user:
                raise ValueError(f"{AUTH_ENV}=basic needs {USER_ENV} (and {PASSWORD_ENV})")
            return cls(address.rstrip("/"), proxy, auth, user, env.get(PASSWORD_ENV, ""))
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise ValueError(
                f"{AUTH_ENV}=jupyterhub (the default) needs JUPYTERHUB_API_TOKEN, which "
                f"JupyterHub gives its servers; elsewhere set {AUTH_ENV}=basic"
            )
        return cls(address.rstrip("/"), proxy, auth, token=token)

    def _proxy_for_client(self) -> str | None:
        if self.proxy_address is None:
            return None
        return self.proxy_address.split("://", 1)[-1]


# One dask_gateway.Gateway per configuration in this process: each runs an event loop on a
# thread of its own, and clients got from connect() share it.
_GATEWAYS: dict[GatewayConfig, Any] = {}
_GATEWAYS_LOCK = threading.Lock()


def _gateway(config: GatewayConfig) -> Any:
    with _GATEWAYS_LOCK:
        gateway = _GATEWAYS.get(config)
        if gateway is None:
            from dask_gateway import BasicAuth, Gateway, JupyterHubAuth

            auth = (
                BasicAuth(config.user, config.password)
                if config.auth == "basic"
                else JupyterHubAuth(config.token)
            )
            gateway = Gateway(config.address, proxy_address=config._proxy_for_client(),
                              auth=auth)
            _GATEWAYS[config] = gateway
        return gateway


_CLOSED: list[Any] = []
_CONNECTED: list[Any] = []  # GatewayCluster objects connect() handed out (see connect)


@atexit.register
def _close_gateways() -> None:
    with _GATEWAYS_LOCK:
        gateways = list(_GATEWAYS.values())
        _GATEWAYS.clear()
    for gateway in gateways:
        with contextlib.suppress(Exception):
            gateway.close()
    # Gateway.close() is not idempotent and __del__ calls it again (raising) unless the
    # interpreter is finalizing: kept referenced until then.
    _CLOSED.extend(gateways)


@contextlib.contextmanager
def _talking_to(config: GatewayConfig) -> Iterator[None]:
    """Turns "can't reach it" and "refused our credentials" into a ``GatewayError`` that
    says which setting to look at; the gateway's own answers (404, 409, 422) pass through."""
    import aiohttp

    try:
        yield
    except aiohttp.ClientResponseError as e:
        if e.status in (401, 403):
            raise GatewayError(
                f"the Dask Gateway at {config.address} refused this server's credentials "
                f"({e.status}); check {AUTH_ENV} and its settings"
            ) from None
        raise GatewayError(
            f"the Dask Gateway at {config.address} answered {e.status} {e.message}"
        ) from None
    except (TimeoutError, aiohttp.ClientConnectionError) as e:
        raise GatewayError(
            f"the Dask Gateway at {config.address} ({ADDRESS_ENV}) cannot be reached: {e}"
        ) from None


# The cluster spec as the gateway's options ---------------------------------------------------

GIB = 2**30


def _memory_gib(size: str) -> int | float:
    from dask.utils import parse_bytes

    gib = parse_bytes(size.replace(" ", "")) / GIB
    return int(gib) if gib.is_integer() else gib


def cluster_options(spec: ClusterSpec, options: Any) -> Any:
    """``options`` (the gateway's ``Options``) set from ``spec``; ``SpecError`` naming the
    spec field the gateway does not offer, or whose value its option refuses."""
    if spec.protocol != "tls":
        raise SpecError(
            f"protocol {spec.protocol!r}: a Dask Gateway cluster always talks TLS through the "
            "gateway's proxy; use protocol 'tls'",
            field="protocol",
        )
    wanted: list[tuple[str, str, Any]] = []  # (spec field, gateway option, value)
    if spec.threads_per_worker is not None:
        wanted.append(("threads_per_worker", "worker_cores", spec.threads_per_worker))
    if spec.memory_limit is not None:
        wanted.append(("memory_limit", "worker_memory", _memory_gib(spec.memory_limit)))
    if spec.gpus_per_worker:
        wanted.append(("gpus_per_worker", "gpus_per_worker", spec.gpus_per_worker))
    for name in ("rmm_pool_size", "device_memory_limit"):
        if getattr(spec, name) is not None:
            wanted.append((name, name, getattr(spec, name)))
    for spec_field, option, value in wanted:
        if option not in options:
            offered = ", ".join(options) or "none"
            raise SpecError(
                f"{spec_field}: this Dask Gateway has no {option!r} option, so it can't honour "
                f"{spec_field}={value!r} (its options: {offered}); leave {spec_field} unset",
                field=spec_field,
            )
        try:
            options[option] = value
        except (TypeError, ValueError) as e:
            raise SpecError(
                f"{spec_field}: the Dask Gateway's {option!r} option refuses {value!r}: {e}",
                field=spec_field,
            ) from None
    return options


# What this process is starting ---------------------------------------------------------------


@dataclass(eq=False)
class _Start:
    """A cluster this process submitted and is bringing up (or that failed to)."""

    address: str
    record: dict[str, Any]
    spec: ClusterSpec
    stage: str = "starting scheduler"
    ready: int = 0
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


_STARTS: dict[str, _Start] = {}
_STARTS_LOCK = threading.Lock()
# Serialises this process's limit checks with its admissions (the hub's quota service is
# the atomic check across processes and servers).
_ADMIT_LOCK = threading.Lock()


def _starts(address: str) -> list[_Start]:
    with _STARTS_LOCK:
        return [s for s in _STARTS.values() if s.address == address]


# The handle ----------------------------------------------------------------------------------


class GatewayHandle(Cluster):
    """A gateway cluster, as the same handle (and JSON) as a cluster of this machine."""

    def __init__(self, record: dict[str, Any], backend: GatewayBackend):
        super().__init__(record, None)  # type: ignore[arg-type]  (no registry: the gateway)
        self._backend = backend

    @property
    def dashboard_link(self) -> str | None:
        """The gateway's absolute URL of the cluster's dashboard."""
        return self._record.get("dashboard_link")

    def to_json(self) -> dict[str, Any]:
        public = {k: self._record.get(k) for k in PUBLIC_FIELDS}
        public["dashboard_link"] = self._record.get("dashboard_link")
        return public

    def refresh(self) -> GatewayHandle:
        self._record = self._backend.get(self.id)._record
        return self

    def client(self, **kwargs: Any) -> Any:
        return self._backend.connect(self.id, **kwargs)

    def scale(self, workers: int) -> GatewayHandle:
        return self._backend.scale(self, workers)

    def stop(self) -> None:
        self._backend.stop(self)


# The backend ---------------------------------------------------------------------------------


class GatewayBackend:
    """start / list / get / scale / stop / connect at one gateway, for this server's user."""

    def __init__(self, config: GatewayConfig, quota: QuotaClient | None = None):
        self.config = config
        self.quota = quota

    @classmethod
    def from_env(cls, quota: QuotaClient | None) -> GatewayBackend | None:
        config = GatewayConfig.from_env()
        return None if config is None else cls(config, quota)

    def __repr__(self) -> str:
        return f"GatewayBackend({self.config.address!r})"

    def gateway(self) -> Any:
        return _gateway(self.config)

    # start ------------------------------------------------------------------------------------

    def start(self, spec: ClusterSpec, *, wait: bool = True,
              progress: bool | None = None) -> GatewayHandle:
        gateway = self.gateway()
        with _talking_to(self.config):
            options = cluster_options(spec, gateway.cluster_options())
            with _ADMIT_LOCK:
                live = self._records(gateway)
                check_workers(spec.workers, _holding(live), worker_limit())
                name = spec.name or f"cluster-{len(live) + 1}"
                try:
                    cluster_id = gateway.submit(cluster_options=options)
                except ValueError as e:  # 422: the gateway's own limits
                    raise ClusterLimitError(f"the Dask Gateway refused the cluster: {e}",
                                            reason="gateway") from None
                if self.quota is not None:
                    try:
                        self.quota.admit_cluster(ledger_key(cluster_id), name, spec.workers, 0,
                                                 [])
                    except QuotaServiceError as e:
                        # Refused: the cluster that was just submitted goes (it has no
                        # workers yet: they come with the scale after admission).
                        with contextlib.suppress(Exception):
                            gateway.stop_cluster(cluster_id)
                        raise _refusal(e) from None
                record = {
                    "id": cluster_id,
                    "name": name,
                    "status": "starting",
                    "error": None,
                    "created": now_iso(),
                    "owner": {"kind": "gateway", "pid": None},
                    "workers_requested": spec.workers,
                    "workers": [],
                    "gpus": [],
                    "spec": spec.to_json(),
                    "scheduler_address": None,
                    "dashboard_link": None,
                }
                start = _Start(self.config.address, record, spec)
                with _STARTS_LOCK:
                    _STARTS[cluster_id] = start
        thread = threading.Thread(target=self._launch, args=(start,),
                                  name=f"gpulab-gateway-start-{cluster_id}", daemon=True)
        thread.start()
        handle = GatewayHandle(start.record, self)
        if not wait:
            return handle
        show = StartProgress(name, spec.workers) if progress is not False else None
        # The start fails by itself past START_TIMEOUT_SECONDS; this bounds the wait even if
        # a call to the gateway hangs (its HTTP client gives up after 5 minutes only).
        give_up = time.monotonic() + START_TIMEOUT_SECONDS + 2 * SCHEDULER_TIMEOUT_SECONDS
        while not start.done.wait(0.05):
            if show is not None:
                show.update(start.stage, start.ready)
            if time.monotonic() > give_up:
                raise TimeoutError(
                    f"cluster {name!r} ({cluster_id}) did not start within "
                    f"{START_TIMEOUT_SECONDS:.0f} s; it is stopped when its start gives up"
                )
        if start.record["status"] != "running":
            if show is not None:
                show.update("failed", 0, force=True)
            raise RuntimeError(f"cluster {name!r} failed to start: {start.record.get('error')}")
        if show is not None:
            show.update("running", start.ready, force=True)
        return handle

    def _launch(self, start: _Start) -> None:
        """Bring a submitted cluster up (on a thread): running, scaled, its workers in."""
        gateway = self.gateway()
        cluster_id, spec = start.record["id"], start.spec
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            report = self._wait_running(gateway, start, deadline)
            start.stage = "starting workers"
            gateway.sync(_set_metadata, report, [METADATA_KEY], {
                "name": start.record["name"],
                "spec": spec.to_json(),
                "workers_requested": spec.workers,
                "created": start.record["created"],
                "ready": False,
            })
            allowed = self._scale_at_gateway(gateway, cluster_id, spec.workers)
            if allowed is not None:
                raise ClusterLimitError(
                    f"the Dask Gateway allows at most {allowed} workers per cluster",
                    reason="gateway", limit=allowed)
            start.record.update(_record(report, None, []) | {
                k: start.record[k] for k in ("name", "status", "created", "workers_requested",
                                             "spec")})

            def seen(workers: list[dict[str, Any]]) -> None:
                start.ready = len(workers)
                start.record["workers"] = workers

            gateway.sync(_wait_for_workers, report, spec.workers, deadline, seen,
                         lambda: start.cancelled)
            gateway.sync(_set_metadata, report, [METADATA_KEY, "ready"], True)
            start.record["status"] = "running"
            with _STARTS_LOCK:
                _STARTS.pop(cluster_id, None)
        except BaseException as e:
            if start.cancelled:
                return
            log.warning("gateway cluster %s failed to start: %s", cluster_id, e)
            start.record.update(status="failed", error=f"{type(e).__name__}: {e}")
            # The failure stays listed in this process, with its error, until dismissed.
            with contextlib.suppress(Exception):
                gateway.stop_cluster(cluster_id)
            self._release(cluster_id, "failed to start")
        finally:
            start.done.set()

    def _wait_running(self, gateway: Any, start: _Start, deadline: float) -> Any:
        cluster_id = start.record["id"]
        while True:
            if start.cancelled:
                raise RuntimeError("stopped while starting")
            report = gateway.get_cluster(cluster_id)
            status = report.status.name
            if status == "RUNNING":
                return report
            if status != "PENDING":
                raise RuntimeError(
                    f"the Dask Gateway reports the cluster {status.lower()} before it ran "
                    "(its logs are at the gateway)"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Dask Gateway did not start the cluster within "
                    f"{START_TIMEOUT_SECONDS:.0f} s"
                )
            time.sleep(POLL_SECONDS)

    def _scale_at_gateway(self, gateway: Any, cluster_id: str, workers: int) -> int | None:
        """Scale at the gateway; the gateway's per-cluster maximum when it capped the
        request to it (its warning says so), else None."""
        from dask_gateway import GatewayWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GatewayWarning)
            try:
                gateway.scale_cluster(cluster_id, workers)
            except ValueError:  # 404: gone meanwhile
                raise ClusterNotFound(cluster_id) from None
        for warning in caught:
            if issubclass(warning.category, GatewayWarning):
                capped = re.search(r"Scaling to (\d+)", str(warning.message))
                return int(capped.group(1)) if capped else workers
        return None

    def _release(self, cluster_id: str, why: str) -> None:
        if self.quota is None:
            return
        try:
            self.quota.release_cluster(ledger_key(cluster_id))
        except QuotaServiceError as e:
            log.warning("gateway cluster %s: the ledger was not told it %s: %s",
                        cluster_id, why, e)

    # list / get ------------------------------------------------------------------------------

    def _records(self, gateway: Any) -> list[dict[str, Any]]:
        """The user's clusters at the gateway (starting and running), as records, with
        what this process is starting or saw fail."""
        reports = gateway.list_clusters()
        states = gateway.sync(_scheduler_states, reports)
        mine = {s.record["id"]: s for s in _starts(self.config.address)}
        records = []
        for report in reports:
            start = mine.pop(report.name, None)
            if start is not None:
                records.append(dict(start.record))
            else:
                records.append(_record(report, *states.get(report.name, (None, None))))
        records.extend(dict(s.record) for s in mine.values() if s.record["status"] == "failed")
        return sorted(records, key=lambda r: (r.get("created") or "", r["id"]))

    def list(self) -> list[GatewayHandle]:
        gateway = self.gateway()
        with _talking_to(self.config):
            return [GatewayHandle(r, self) for r in self._records(gateway)]

    def get(self, cluster_id: Any) -> GatewayHandle:
        cluster_id = check_id(cluster_id)
        with _STARTS_LOCK:
            start = _STARTS.get(cluster_id)
        if start is not None and start.address == self.config.address:
            return GatewayHandle(start.record, self)
        gateway = self.gateway()
        with _talking_to(self.config):
            report = self._report(gateway, cluster_id)
            meta, workers = gateway.sync(_scheduler_states, [report]).get(cluster_id,
                                                                           (None, None))
        return GatewayHandle(_record(report, meta, workers), self)

    def _report(self, gateway: Any, cluster_id: str) -> Any:
        import aiohttp

        try:
            report = gateway.get_cluster(cluster_id)
        except ValueError:  # 404
            raise ClusterNotFound(cluster_id) from None
        except aiohttp.ClientResponseError as e:
            if e.status == 403:  # another user's cluster: not for this one to see
                raise ClusterNotFound(cluster_id) from None
            raise
        if report.status.name in ("STOPPING", "STOPPED"):  # as the gateway's own list
            raise ClusterNotFound(cluster_id)
        return report

    # scale / stop ----------------------------------------------------------------------------

    def scale(self, cluster: Cluster | str, workers: int) -> GatewayHandle:
        handle = self.get(cluster.id if isinstance(cluster, Cluster) else cluster)
        if handle.status != "running":
            raise ClusterBusy(
                f"cluster {handle.name!r} is {handle.status}; it can be scaled once it runs"
            )
        gateway = self.gateway()
        with _talking_to(self.config), _ADMIT_LOCK:
            others = [r for r in self._records(gateway) if r["id"] != handle.id]
            check_workers(workers, _holding(others), worker_limit())
            before = handle._record["workers_requested"]
            key = ledger_key(handle.id)
            if self.quota is not None and workers > before:
                try:
                    self.quota.scale_cluster(key, workers)
                except QuotaServiceError as e:
                    raise _refusal(e) from None
            allowed = self._scale_at_gateway(gateway, handle.id, workers)
            now = workers if allowed is None else allowed
            if self.quota is not None and now < max(before, workers):
                with contextlib.suppress(QuotaServiceError):  # fewer is always allowed
                    self.quota.scale_cluster(key, now)
            report = self._report(gateway, handle.id)
            with contextlib.suppress(OSError, TimeoutError):
                gateway.sync(_set_metadata, report, [METADATA_KEY, "workers_requested"], now)
            if allowed is not None:
                raise ClusterLimitError(
                    f"the Dask Gateway allows at most {allowed} workers per cluster: cluster "
                    f"{handle.name!r} was scaled to {allowed}, not {workers}",
                    reason="gateway", limit=allowed, in_use=allowed,
                )
        return handle.refresh()

    def stop(self, cluster: Cluster | str) -> None:
        cluster_id = check_id(cluster.id if isinstance(cluster, Cluster) else cluster)
        with _STARTS_LOCK:
            start = _STARTS.get(cluster_id)
            if start is not None and start.address == self.config.address:
                start.cancelled = True
                _STARTS.pop(cluster_id)
                if start.record["status"] == "failed":  # stopped and released already
                    return
            else:
                start = None
        gateway = self.gateway()
        with _talking_to(self.config):
            if start is None:
                self._report(gateway, cluster_id)  # ClusterNotFound for another's or none
            gateway.stop_cluster(cluster_id)
        self._release(cluster_id, "stopped")

    # connect ---------------------------------------------------------------------------------

    def connect(self, cluster_id: str | None = None, **client_kwargs: Any) -> Any:
        """A ``distributed.Client`` for one of the user's gateway clusters (without an id:
        the only one)."""
        handle = the_only_one(self.list()) if cluster_id is None else self.get(cluster_id)
        handle.wait()
        with _talking_to(self.config):
            cluster = self.gateway().connect(handle.id)
        # Kept referenced for the process's life: a GatewayCluster collected on the
        # gateway's loop thread closes itself synchronously on that loop and deadlocks it.
        _CONNECTED.append(cluster)
        if not client_kwargs:
            return cluster.get_client()
        from distributed import Client

        return Client(cluster, security=cluster.security, loop=cluster.loop, **client_kwargs)


# The record of a gateway cluster -------------------------------------------------------------


def _holding(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clusters whose workers count against the limit (a failed start holds none)."""
    return [r for r in records if r["status"] != "failed"]


def _record(report: Any, meta: Mapping[str, Any] | None,
            workers: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A cluster record (the local path's fields) from the gateway's report and what the
    cluster's scheduler said (None: not asked, or no answer)."""
    meta = meta if isinstance(meta, Mapping) else {}
    workers = workers or []
    status = STATUSES.get(report.status.name, "failed")
    requested = meta.get("workers_requested")
    if not isinstance(requested, int) or isinstance(requested, bool):
        requested = len(workers)  # a cluster started without gpulab
    if status == "running" and meta and not meta.get("ready") and len(workers) < requested:
        status = "starting"  # its workers are still coming
    spec = meta.get("spec")
    if not isinstance(spec, Mapping):
        spec = ClusterSpec(workers=max(requested, 1)).to_json()
    created = meta.get("created")
    if not isinstance(created, str):
        created = report.start_time.astimezone(UTC).isoformat(timespec="seconds")
    name = meta.get("name")
    return {
        "id": report.name,
        "name": name if isinstance(name, str) and name else report.name,
        "status": status,
        "error": (
            "the Dask Gateway reports this cluster failed (its logs are at the gateway)"
            if status == "failed"
            else None
        ),
        "created": created,
        "owner": {"kind": "gateway", "pid": None},
        "workers_requested": requested,
        "workers": workers,
        "gpus": [],
        "spec": dict(spec),
        "scheduler_address": report.scheduler_address,
        "dashboard_link": report.dashboard_link,
    }


# The cluster's scheduler (run on the gateway client's event loop) ----------------------------


def _rpc(report: Any) -> Any:
    from distributed.core import rpc

    return rpc(
        report.scheduler_address,
        connection_args=report.security.get_connection_args("client"),
        timeout=SCHEDULER_TIMEOUT_SECONDS,
    )


def _workers(identity: Mapping[str, Any]) -> list[dict[str, Any]]:
    workers = [
        {
            "name": str(info.get("name", address)),
            "address": address,
            "nthreads": int(info.get("nthreads") or 0),
            "memory_limit": int(info.get("memory_limit") or 0),
            "device": None,
        }
        for address, info in (identity.get("workers") or {}).items()
    ]
    return sorted(workers, key=lambda w: w["name"])


async def _scheduler_state(report: Any) -> tuple[Any, list[dict[str, Any]]]:
    async def ask() -> tuple[Any, list[dict[str, Any]]]:
        async with _rpc(report) as scheduler:
            identity = await scheduler.identity()
            meta = await scheduler.get_metadata(keys=[METADATA_KEY], default=None)
        return meta, _workers(identity)

    return await asyncio.wait_for(ask(), SCHEDULER_TIMEOUT_SECONDS)


async def _scheduler_states(reports: list[Any]) -> dict[str, tuple[Any, Any]]:
    """(gpulab's metadata, workers) of each running cluster, asked at once; (None, None)
    for one that does not answer (it is shown from the gateway's report alone)."""
    running = [r for r in reports if r.status.name == "RUNNING" and r.security is not None]
    answers = await asyncio.gather(*(_scheduler_state(r) for r in running),
                                   return_exceptions=True)
    states: dict[str, tuple[Any, Any]] = {}
    for report, answer in zip(running, answers, strict=True):
        if isinstance(answer, BaseException):
            log.debug("gateway cluster %s: no answer from its scheduler: %s", report.name, answer)
            states[report.name] = (None, None)
        else:
            states[report.name] = answer
    return states


async def _set_metadata(report: Any, keys: list[str], value: Any) -> None:
    async with _rpc(report) as scheduler:
        await asyncio.wait_for(scheduler.set_metadata(keys=keys, value=value),
                               SCHEDULER_TIMEOUT_SECONDS)


async def _wait_for_workers(report: Any, n: int, deadline: float, seen: Any,
                            cancelled: Any) -> None:
    async with _rpc(report) as scheduler:
        while True:
            identity = await asyncio.wait_for(scheduler.identity(), SCHEDULER_TIMEOUT_SECONDS)
            workers = _workers(identity)
            seen(workers)
            if len(workers) >= n:
                return
            if cancelled():
                raise RuntimeError("stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(workers)} of {n} workers started within "
                    f"{START_TIMEOUT_SECONDS:.0f} s"
                )
            await asyncio.sleep(POLL_SECONDS)
