"""gpulab on one production machine: ``GpulabSystemdSpawner``, jupyterhub-systemdspawner under
gpulab's quota. See docs/deploy-systemd.md and deploy/systemd/.

Each server is a transient systemd unit under its own OS account (an existing account, or
a dynamic user with ``dynamic_users``). The hub places the GPUs, as in the embedded default:
the ledger's devices are this machine's (NVML), ``CUDA_VISIBLE_DEVICES`` names them, and
the unit may open no other GPU. Its device access list (``DevicePolicy=closed``, a cgroup
device filter the kernel enforces) allows:

- the granted GPUs' ``/dev/nvidiaN`` (N: the GPU's minor number, NVML's index here; a MIG
  slice's parent GPU);
- the driver's shared nodes ``/dev/nvidiactl``, ``/dev/nvidia-uvm``,
  ``/dev/nvidia-uvm-tools``;
- for MIG slices, ``/dev/nvidia-caps`` (``char-nvidia-caps``: the capability nodes CUDA
  needs to open a MIG instance). Within one MIG-mode GPU the unit could open its other
  slices' capabilities too; ``CUDA_VISIBLE_DEVICES`` keeps the server on its own.

``DevicePolicy=closed`` also allows the pseudo devices every program needs (/dev/null,
/dev/zero, /dev/random, /dev/urandom, /dev/tty, ...). ``profile_resources`` per profile:
``mem_limit`` (``MemoryMax``) and ``cpu_limit`` (``CPUQuota``).
"""

from __future__ import annotations

from collections.abc import Iterable

from systemdspawner import SystemdSpawner

from gpulab.gpus import Inventory
from gpulab_hub.profile_resources import ProfileResourcesMixin
from gpulab_hub.quota_spawner import QuotaSpawnerMixin

SHARED_NVIDIA_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
MIG_CAPABILITIES = "char-nvidia-caps"


def device_allow(uuids: Iterable[str], inventory: Inventory) -> list[str]:
    """``DeviceAllow=`` entries for a unit that may use exactly ``uuids`` (nothing for a
    CPU server: the unit then opens no GPU at all). A UUID this machine's inventory does
    not know is an error: the hub never grants a device it cannot fence."""
    uuids = list(uuids)
    if not uuids:
        return []
    minors: list[int] = []
    mig = False
    for uuid in uuids:
        gpu = inventory.by_uuid(uuid)
        if gpu is None:
            raise ValueError(f"granted device {uuid!r} is not in this machine's GPU inventory")
        mig = mig or gpu.is_mig
        if gpu.index not in minors:
            minors.append(gpu.index)
    nodes = [f"/dev/nvidia{minor}" for minor in sorted(minors)] + list(SHARED_NVIDIA_NODES)
    allow = [f"{node} rw" for node in nodes]
    if mig:
        allow.append(f"{MIG_CAPABILITIES} r")
    return allow


class GpulabSystemdMixin(ProfileResourcesMixin):
    """Turns the grant into the unit's limits and device list (between the quota mixin and
    SystemdSpawner). Override point: ``start_unit()``, SystemdSpawner's start."""

    configured_unit_properties = None  # unit_extra_properties from config, kept unchanged

    def unit_device_properties(self) -> dict[str, str | list[str]]:
        """The device properties of the unit for the devices granted now."""
        return {
            "DevicePolicy": "closed",
            "DeviceAllow": device_allow(self.granted_devices, self.quota.inventory),
        }

    async def start(self):
        self.apply_admitted_profile()
        if self.configured_unit_properties is None:
            self.configured_unit_properties = dict(self.unit_extra_properties)
        # Per spawn: SystemdSpawner expands (and rewrites) unit_extra_properties in place.
        self.unit_extra_properties = {
            **self.configured_unit_properties,
            **self.unit_device_properties(),
        }
        return await self.start_unit()

    async def start_unit(self):
        return await super().start()

    def _expand_user_vars(self, string):
        # systemd-run takes a property several times (DeviceAllow=) as a list; the base
        # class formats only strings.
        if isinstance(string, list):
            return [super(GpulabSystemdMixin, self)._expand_user_vars(s) for s in string]
        return super()._expand_user_vars(string)


class GpulabSystemdSpawner(QuotaSpawnerMixin, GpulabSystemdMixin, SystemdSpawner):
    """SystemdSpawner whose units see only the GPUs gpulab's quota admitted
    (``c.JupyterHub.spawner_class = "gpulab-systemd"``)."""
