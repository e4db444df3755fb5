"""Dask Gateway server config for gpulab on Kubernetes (the dask-gateway Helm chart loads it
through gateway.extraConfig, see dask-gateway-values.yaml; it runs in the gateway pod).

Users' clusters come from gpulab.clusters (the sidebar, ``clusters.start``) with
GPULAB_DASK_GATEWAY_ADDRESS set in their pods. The options a user may pick, and the limits
of each cluster, follow the same gpulab policy as the hub: the policies file
(GPULAB_QUOTA_FILE, the gpulab-quota ConfigMap) and the ledger's operator overrides
(GPULAB_LEDGER_URL), read at each cluster start. See gpulab_hub/gateway_options.py.
"""

import os

from gpulab_hub.gateway_options import gpulab_cluster_options, quota_policy_lookup
from gpulab_hub.quota_file import quota_settings

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

c.Backend.cluster_options = gpulab_cluster_options(
    quota_policy_lookup(quota_settings()),
    max_cores=int(os.environ.get("GPULAB_GATEWAY_MAX_CORES", "8")),
    max_memory_gib=float(os.environ.get("GPULAB_GATEWAY_MAX_MEMORY_GIB", "64")),
    gpu_resource=os.environ.get("GPULAB_GPU_RESOURCE", "nvidia.com/gpu"),
)
# GPU workers land on the GPU node pool (its taint), CPU workers anywhere.
c.KubeClusterConfig.worker_extra_pod_config = {
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
}
# A cluster nobody uses for an hour is stopped.
c.KubeClusterConfig.idle_timeout = 3600
