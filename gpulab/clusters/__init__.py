"""Dask clusters bound to this server's allocation, from a notebook or the sidebar.

>>> from gpulab import clusters
>>> cluster = clusters.start(workers=2)          # progress shows while it starts
>>> client = cluster.client()                    # or clusters.connect(cluster.id) elsewhere
>>> clusters.list()                              # every cluster of this server
>>> cluster.scale(4); cluster.stop()

With GPUs (``gpus_per_worker=1``) the cluster is a ``dask_cuda.LocalCUDACluster`` with
one worker per allocated GPU or MIG slice; without, a ``distributed.LocalCluster``. A
request over the user's Dask-worker limit or this server's GPUs is refused with
``ClusterLimitError`` and nothing starts. Under gpulab's hub each cluster is admitted by
the quota service and recorded in the ledger. With ``GPULAB_DASK_GATEWAY_ADDRESS`` set,
the same functions run the user's clusters at that Dask Gateway instead (see ``gateway``).
"""

from gpulab.clusters.gateway import GatewayError
from gpulab.clusters.limits import ClusterLimitError, allocated_devices
from gpulab.clusters.manager import (
    Cluster,
    ClusterBusy,
    close_owned,
    connect,
    get,
    list_clusters,
    scale,
    start,
    stop,
)
from gpulab.clusters.registry import ClusterNotFound, Registry
from gpulab.clusters.spec import ClusterSpec, SpecError

list = list_clusters  # noqa: A001  (clusters.list() reads as the issue and the docs say)

__all__ = [
    "Cluster",
    "ClusterBusy",
    "ClusterLimitError",
    "ClusterNotFound",
    "ClusterSpec",
    "GatewayError",
    "Registry",
    "SpecError",
    "allocated_devices",
    "close_owned",
    "connect",
    "get",
    "list",
    "list_clusters",
    "scale",
    "start",
    "stop",
]
