"""Dask Gateway cluster options under gpulab's quota policy (deploy/kubernetes/
dask_gateway_config.py sets ``c.Backend.cluster_options = gpulab_cluster_options(...)``).

dask-gateway dropped its own per-user limits (dask/dask-gateway#249, #313), so the policy
is enforced in two places:

- here, per cluster, in the gateway: the options a user may pick (``worker_cores``,
  ``worker_memory`` in GiB, ``gpus_per_worker``, the names ``gpulab.clusters.gateway``
  sends) are bounded by the user's gpulab policy, and the cluster's configuration carries
  ``cluster_max_workers`` = the user's ``max_dask_workers`` and, for GPU workers, at most
  ``max_gpus`` workers, so the gateway refuses a scale beyond them;
- across all of a user's clusters, in ``gpulab.clusters`` (the gateway backend counts the
  user's gateway clusters' workers) and in the quota service's ledger (``api/clusters``).

A request outside the policy is refused with a message that names the field and the limit
(the gateway answers 422 with it); nothing starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gpulab.quota.policy import Policy

PolicyFor = Callable[[str, list[str]], Policy]


class ClusterOptionsRefused(ValueError):
    """Options the user's policy does not allow; ``field`` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def gpu_workers_allowed(policy: Policy) -> int | None:
    """How many one-GPU workers the policy allows at once (None: no limit)."""
    if policy.profiles is not None and not any(
        p != "cpu" for p in policy.profiles
    ):
        return 0  # a CPU-only user (e.g. a workshop without GPUs)
    return policy.max_gpus


def cluster_configuration(
    options: Mapping[str, Any],
    policy: Policy,
    *,
    gpu_resource: str = "nvidia.com/gpu",
    kubernetes: bool = True,
) -> dict[str, Any]:
    """The gateway's cluster configuration for ``options`` under ``policy``, or
    ``ClusterOptionsRefused`` naming the field. ``options``: worker_cores (int),
    worker_memory (GiB), gpus_per_worker (0 or 1). ``kubernetes``: for dask-gateway's
    KubeBackend (container limits, the GPU resource); False for its other backends."""
    gpus = options.get("gpus_per_worker", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus not in (0, 1):
        raise ClusterOptionsRefused(
            "gpus_per_worker",
            f"gpus_per_worker must be 0 or 1 (Dask-CUDA runs one worker per GPU), not {gpus!r}",
        )
    max_workers = policy.max_dask_workers
    if max_workers == 0:
        raise ClusterOptionsRefused(
            "workers", "your quota allows no Dask workers (max_dask_workers is 0)"
        )
    if gpus:
        allowed = gpu_workers_allowed(policy)
        if allowed == 0:
            raise ClusterOptionsRefused(
                "gpus_per_worker",
                "gpus_per_worker=1: your quota allows no GPUs; use gpus_per_worker=0",
            )
        if allowed is not None:
            max_workers = allowed if max_workers is None else min(max_workers, allowed)
    cores = options["worker_cores"]
    memory_gib = options["worker_memory"]
    memory = int(memory_gib * 2**30)
    config: dict[str, Any] = {
        "worker_cores": cores,
        "worker_memory": memory,
        "environment": {"GPULAB_GPUS_PER_WORKER": str(gpus)},
    }
    if kubernetes:  # requests and limits alike: a worker can't grow past its option
        config.update(worker_cores_limit=cores, worker_memory_limit=memory)
    if max_workers is not None:
        config["cluster_max_workers"] = max_workers
    if gpus:
        # One worker per GPU, with RMM and spilling: Dask-CUDA's worker (the image's
        # gpulab[gpu] extra).
        config["worker_cmd"] = "dask-cuda-worker"
        if kubernetes:  # the worker container's limit; the device plugin places the GPU
            config["worker_extra_container_config"] = {
                "resources": {"limits": {gpu_resource: str(gpus)}}
            }
    return config


def gpulab_cluster_options(
    policy_for: PolicyFor,
    *,
    max_cores: int = 8,
    max_memory_gib: float = 64,
    gpu_resource: str = "nvidia.com/gpu",
    kubernetes: bool = True,
) -> Callable[[Any], Any]:
    """``c.Backend.cluster_options``: a callable of the gateway's user that returns the
    ``Options`` that user may pick (GPU workers offered only where the policy allows
    GPUs), whose handler applies ``cluster_configuration``. ``policy_for(name, groups)``
    resolves a user's policy (``GpulabQuota.policy_for``: the config file's policies with
    the ledger's operator overrides, read at each cluster start)."""
    from dask_gateway_server.options import Float, Integer, Options

    def options_for(user: Any) -> Any:
        policy = policy_for(user.name, _groups(user.groups))
        gpu_max = 0 if gpu_workers_allowed(policy) == 0 else 1

        def handler(options: Mapping[str, Any], user: Any) -> dict[str, Any]:
            # The policy is read again: it may have changed since the form was built.
            current = policy_for(user.name, _groups(user.groups))
            return cluster_configuration(options, current, gpu_resource=gpu_resource,
                                         kubernetes=kubernetes)

        return Options(
            Integer("worker_cores", default=1, min=1, max=max_cores, label="Worker cores"),
            Float("worker_memory", default=4, min=1, max=max_memory_gib,
                  label="Worker memory (GiB)"),
            Integer("gpus_per_worker", default=0, min=0, max=gpu_max,
                    label="GPUs per worker"),
            handler=handler,
        )

    return options_for


def _groups(groups: Iterable[str] | None) -> list[str]:
    return sorted(groups or ())


def quota_policy_lookup(settings: Mapping[str, Any]) -> PolicyFor:
    """``policy_for`` from ``GpulabQuota`` settings (``gpulab_hub.quota_file``): the same
    policies and ledger overrides the hub applies. The gateway holds no GPUs itself, so
    the inventory is left empty."""
    from traitlets.config import Config

    from gpulab_hub.quota import GpulabQuota

    config = Config()
    for key, value in settings.items():
        if key != "static_gpus":
            setattr(config.GpulabQuota, key, value)
    config.GpulabQuota.static_gpus = []
    quota = GpulabQuota(config=config)
    return quota.policy_for
