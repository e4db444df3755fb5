"""What a user asks for when they start a cluster, checked before anything starts.

The same spec comes from a notebook (``clusters.start(workers=4)``), from the sidebar
(``POST /gpulab/clusters`` with a JSON body) and from the launcher dashboard, so it is
validated in one place: a bad field raises ``SpecError`` naming that field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

PROTOCOLS = ("tls", "tcp", "ucx")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")
# A positive size with an optional unit, as the OpenAPI description's Size says.
SIZE_PATTERN = re.compile(
    r"([1-9][0-9]{0,5}(\.[0-9]{1,3})?|0\.[0-9]{0,2}[1-9]) ?(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?"
)
MAX_WORKERS = 512  # a sanity bound; the user's policy is the real limit


class SpecError(ValueError):
    """A cluster request with a bad field; ``field`` names it for the API's 400."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "field": self.field}


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster request.

    ``workers`` Dask workers, each with ``threads_per_worker`` threads and
    ``memory_limit`` of host memory (``"4 GiB"``; None lets Dask split the machine).
    With ``gpus_per_worker=1`` each worker gets one of the server's GPUs (or MIG slices)
    and the cluster is a ``LocalCUDACluster``: ``rmm_pool_size`` pre-allocates that much
    device memory per worker, ``device_memory_limit`` spills to host memory above it.
    ``protocol`` is ``tls`` by default: every cluster gets its own certificate, so other
    accounts on a shared machine cannot connect to its scheduler; ``tcp`` is faster to
    start but open to any local process; ``ucx`` needs UCX (GPU clusters).
    """

    workers: int = 1
    name: str = ""
    threads_per_worker: int | None = None
    memory_limit: str | None = None
    gpus_per_worker: int = 0
    rmm_pool_size: str | None = None
    device_memory_limit: str | None = None
    protocol: str = "tls"

    @property
    def gpus(self) -> int:
        return self.workers * self.gpus_per_worker

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Any) -> ClusterSpec:
        """A spec from untrusted JSON: unknown keys and wrong types are refused."""
        if not isinstance(body, dict):
            raise SpecError("the request body must be a JSON object", field="body")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise SpecError(
                f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(known))}",
                field=str(unknown[0]),
            )
        return cls.build(**body)

    @classmethod
    def build(cls, **values: Any) -> ClusterSpec:
        """A checked spec; every check names the field it failed on."""
        spec = cls(**values)
        _whole("workers", spec.workers, low=1, high=MAX_WORKERS)
        if not isinstance(spec.name, str) or (spec.name and not NAME_PATTERN.fullmatch(spec.name)):
            raise SpecError(
                "name must be 1-64 letters, digits, spaces, '_', '.' or '-', starting with a "
                "letter or digit",
                field="name",
            )
        if spec.threads_per_worker is not None:
            _whole("threads_per_worker", spec.threads_per_worker, low=1, high=256)
        _whole(
            "gpus_per_worker",
            spec.gpus_per_worker,
            low=0,
            high=1,
            why=" (Dask-CUDA runs one worker per GPU)",
        )
        for name in ("memory_limit", "rmm_pool_size", "device_memory_limit"):
            _size(name, getattr(spec, name))
        if spec.gpus_per_worker == 0:
            for name in ("rmm_pool_size", "device_memory_limit"):
                if getattr(spec, name) is not None:
                    raise SpecError(f"{name} needs GPU workers (gpus_per_worker=1)", field=name)
        if spec.protocol not in PROTOCOLS:
            raise SpecError(f"protocol must be one of {', '.join(PROTOCOLS)}", field="protocol")
        if spec.protocol == "ucx" and spec.gpus_per_worker == 0:
            raise SpecError("protocol 'ucx' is for GPU workers; use 'tls'", field="protocol")
        return spec


def _whole(field: str, value: Any, *, low: int, high: int, why: str = "") -> None:
    # bool is an int in Python; `"workers": true` is a client bug, not 1 worker.
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{field} must be a whole number, got {value!r}", field=field)
    if not low <= value <= high:
        raise SpecError(f"{field} must be between {low} and {high}{why}, got {value}", field=field)


def _size(field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not SIZE_PATTERN.fullmatch(value):
        raise SpecError(f'{field} must be a size such as "4 GiB" or "500 MB" (more than 0), '
                        f"got {value!r}", field=field)
