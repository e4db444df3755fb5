"""The clusters this machine runs: ``distributed.LocalCluster`` without GPUs, and
``dask_cuda.LocalCUDACluster`` on exactly the devices the cluster was given.

dask_cuda is imported only when a GPU cluster is asked for: it is an optional extra and
fails to import on machines without CUDA.
"""

from __future__ import annotations

import logging
from typing import Any

from gpulab.clusters.spec import ClusterSpec


def make_security(protocol: str) -> Any:
    """A fresh self-signed certificate for this cluster alone (``tls``), else none."""
    if protocol != "tls":
        return None
    from distributed.security import Security

    return Security.temporary()


def security_to_json(security: Any) -> dict[str, str] | None:
    """The PEM texts a client needs, for the (private) registry record."""
    if security is None:
        return None
    return {
        "tls_ca_file": security.tls_ca_file,
        "tls_client_cert": security.tls_client_cert,
        "tls_client_key": security.tls_client_key,
    }


def security_from_json(data: dict[str, str] | None) -> Any:
    if not data:
        return None
    from distributed.security import Security

    return Security(require_encryption=True, **data)


def _dashboard_address() -> str | None:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it; without it, no dashboard)
    except ImportError:
        return None
    return "127.0.0.1:0"


def build_local(spec: ClusterSpec, devices: list[str], security: Any, plugins: list[Any]) -> Any:
    """Start the cluster in this process (scheduler on this process's loop thread, one
    process per worker), listening on 127.0.0.1 only."""
    common: dict[str, Any] = dict(
        n_workers=spec.workers,
        host="127.0.0.1",
        dashboard_address=_dashboard_address(),
        protocol=_protocol_for(spec),
        security=security,
        silence_logs=logging.ERROR,
        scheduler_kwargs={"plugins": plugins},
    )
    if spec.threads_per_worker is not None:
        common["threads_per_worker"] = spec.threads_per_worker
    if spec.memory_limit is not None:
        common["memory_limit"] = spec.memory_limit
    if devices:
        return _build_cuda(spec, devices, common)
    from distributed import LocalCluster

    return LocalCluster(processes=True, **common)


def _protocol_for(spec: ClusterSpec) -> str:
    return {"tls": "tls://", "tcp": "tcp://", "ucx": "ucx://"}[spec.protocol]


def _build_cuda(spec: ClusterSpec, devices: list[str], common: dict[str, Any]) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as e:
        raise RuntimeError(
            "GPU clusters need dask-cuda: install gpulab's GPU extra "
            f"(pip install 'gpulab[gpu]'); importing dask_cuda failed: {e}"
        ) from None
    options: dict[str, Any] = {"CUDA_VISIBLE_DEVICES": list(devices)}
    if spec.rmm_pool_size is not None:
        options["rmm_pool_size"] = spec.rmm_pool_size
    if spec.device_memory_limit is not None:
        options["device_memory_limit"] = spec.device_memory_limit
    common = dict(common, threads_per_worker=spec.threads_per_worker or 1)
    return LocalCUDACluster(**options, **common)
