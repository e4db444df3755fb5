"""gpulab on Kubernetes (Zero to JupyterHub): ``GpulabKubeSpawner``, KubeSpawner under
gpulab's quota. See docs/deploy-kubernetes.md and deploy/kubernetes/values.yaml.

The spawn form, admission, release and the server's quota environment are
``QuotaSpawnerMixin``'s, as on one machine. What differs:

- the admitted profile becomes the pod's GPU limit: ``nvidia.com/gpu: N`` for N whole GPUs,
  ``nvidia.com/mig-<profile>: 1`` for a MIG slice (the NVIDIA device plugin's "mixed"
  strategy names); a CPU profile asks for no GPU resource at all;
- the device plugin, not the hub, picks the physical GPU: the ledger counts the node pool's
  GPUs as slots (``c.GpulabQuota.static_gpus = pool_inventory(...)``), so admission bounds
  how many GPUs users hold at once, per user and in total, and the scheduler places them.
  The pod gets no ``CUDA_VISIBLE_DEVICES`` from the hub (the container runtime exposes only
  the pod's GPUs, and NVML inside the pod lists exactly those);
- ``profile_resources`` per profile: ``mem_limit``, ``cpu_limit``, ``mem_guarantee``,
  ``cpu_guarantee``, ``node_selector`` (merged over the spawner's own), ``tolerations``
  (added to the spawner's own) and ``image``.

KubeSpawner's own ``profile_list`` must stay empty: gpulab's profiles come from the policy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kubespawner import KubeSpawner
from traitlets import Unicode, validate

from gpulab.quota.profiles import Profile
from gpulab_hub.deploy_services import register_services
from gpulab_hub.profile_resources import (
    COMMON_SETTINGS,
    ProfileResourcesMixin,
    scheduler_placed_env,
)
from gpulab_hub.quota_file import apply_quota_settings
from gpulab_hub.quota_spawner import QuotaSpawnerMixin

KUBE_SETTINGS = (
    *COMMON_SETTINGS,
    "mem_guarantee",
    "cpu_guarantee",
    "node_selector",
    "tolerations",
    "image",
)


def gpu_resources(profile: Profile, gpu_resource: str = "nvidia.com/gpu") -> dict[str, str]:
    """The extended resources a pod of ``profile`` asks for (limits; Kubernetes sets the
    request of an extended resource equal to its limit)."""
    if profile.gpus == 0:
        return {}
    if profile.mig is not None:
        return {f"nvidia.com/mig-{profile.mig}": "1"}
    return {gpu_resource: str(profile.gpus)}


class GpulabKubeMixin(ProfileResourcesMixin):
    """Turns the admitted profile into the pod (between the quota mixin and KubeSpawner).

    ``load_user_options`` is KubeSpawner's hook that runs before it builds the pod
    manifest: here it applies gpulab's admitted profile instead of KubeSpawner's
    ``profile_list``.
    """

    profile_settings_allowed = KUBE_SETTINGS

    gpu_resource = Unicode(
        "nvidia.com/gpu",
        config=True,
        help="""The extended resource of a whole GPU, as the device plugin advertises it
        (MIG slices are nvidia.com/mig-<profile>).""",
    )

    @validate("profile_list")
    def _no_kubespawner_profiles(self, proposal):
        if proposal["value"]:
            raise ValueError(
                f"{type(self).__name__}.profile_list must stay empty: gpulab's profiles come "
                "from the quota policy (use profile_resources for per-profile settings)"
            )
        return proposal["value"]

    async def load_user_options(self):
        # Options were checked and admitted by QuotaSpawnerMixin.start(); the admitted
        # profile sets the pod's resources.
        self.apply_admitted_profile()

    def apply_profile(self, profile: Profile, settings: Mapping[str, Any]) -> None:
        super().apply_profile(profile, settings)
        for key in ("mem_guarantee", "cpu_guarantee", "image"):
            if key in settings:
                setattr(self, key, settings[key])
        if "node_selector" in settings:
            self.node_selector = {**self.node_selector, **settings["node_selector"]}
        if "tolerations" in settings:
            own = self.tolerations
            own = list(own.values()) if isinstance(own, dict) else list(own)
            self.tolerations = own + list(settings["tolerations"])
        # Only gpulab sets the GPU resources: a leftover from an earlier spawn goes.
        limits = {
            k: v for k, v in self.extra_resource_limits.items()
            if k != self.gpu_resource and not k.startswith("nvidia.com/mig-")
        }
        self.extra_resource_limits = {**limits, **gpu_resources(profile, self.gpu_resource)}


class GpulabKubeSpawner(QuotaSpawnerMixin, GpulabKubeMixin, KubeSpawner):
    """KubeSpawner whose pods get the GPUs gpulab's quota admitted
    (``c.JupyterHub.spawner_class = "gpulab-kube"``)."""

    quota_url = Unicode(
        "",
        config=True,
        help="""The quota service's URL as user pods reach it (GPULAB_QUOTA_URL), e.g.
        http://proxy-public/services/gpulab-quota/ (through the proxy: it stays valid when
        the hub pod, where the service runs, moves). Empty: the service's own url.""",
    )

    def quota_service_url(self) -> str:
        return self.quota_url or super().quota_service_url()

    def get_env(self):
        # After the quota mixin's: the device plugin, not the hub, picks the GPUs.
        return scheduler_placed_env(super().get_env(), tuple(self.granted_devices))


QUOTA_PORT = 10101
DASHBOARDS_PORT = 10102


def configure_z2jh(c: Any, env: Mapping[str, str] | None = None) -> None:
    """gpulab's part of a Zero to JupyterHub hub config (deploy/kubernetes/values.yaml's
    hub.extraConfig): the spawner, the shared quota settings, and the quota and dashboards
    services, run inside the hub pod and listening on its IP (``POD_IP``, from the
    downward API), on ports QUOTA_PORT and DASHBOARDS_PORT. Environment: ``POD_IP``,
    ``GPULAB_LEDGER_URL``, ``GPULAB_QUOTA_FILE``, ``GPULAB_RUNS_DIR``,
    ``GPULAB_PUBLIC_HOSTS`` (the hub's public host[:port], comma-separated) and
    optionally ``GPULAB_POD_QUOTA_URL``. A missing one is named."""
    env = os.environ if env is None else env
    required = ("POD_IP", "GPULAB_LEDGER_URL", "GPULAB_RUNS_DIR", "GPULAB_PUBLIC_HOSTS")
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise ValueError(f"gpulab on Kubernetes needs {', '.join(missing)} in the hub's "
                         "environment (hub.extraEnv)")
    c.JupyterHub.spawner_class = "gpulab-kube"
    apply_quota_settings(c, env)
    pod_ip = env["POD_IP"]
    admins = c.Authenticator.admin_users if "admin_users" in c.Authenticator else ()
    register_services(
        c,
        env=env,
        quota_url=f"http://{pod_ip}:{QUOTA_PORT}",
        dashboards_url=f"http://{pod_ip}:{DASHBOARDS_PORT}",
        runs_dir=env["GPULAB_RUNS_DIR"],
        origins=[h.strip() for h in env["GPULAB_PUBLIC_HOSTS"].split(",") if h.strip()],
        operators=sorted(admins),
    )
    c.GpulabKubeSpawner.quota_url = env.get(
        "GPULAB_POD_QUOTA_URL", "http://proxy-public/services/gpulab-quota/"
    )
