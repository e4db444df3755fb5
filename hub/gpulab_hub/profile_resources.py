"""What the scale-out spawners (Kubernetes, Slurm, systemd) share: the profile the ledger
admitted, each profile's own resources from config, and the environment of a server whose
GPUs a scheduler places.

``QuotaSpawnerMixin`` admits a spawn and records the grant (``granted_devices``,
``_spawn_policy``); it knows nothing of pods, batch jobs or units. ``ProfileResourcesMixin``
sits between it and the base spawner (``class S(QuotaSpawnerMixin, ProfileResourcesMixin,
Base)``) and turns the grant into what the base spawner needs, through the base's own
traits, after admission and before the base starts anything.

Two kinds of GPU placement:

- the hub places (systemd: one machine): the ledger's devices are this machine's real GPUs
  and ``CUDA_VISIBLE_DEVICES`` names them, as in the embedded default;
- a scheduler places (Kubernetes' device plugin, Slurm's gres): the ledger counts GPUs as
  a pool (one static inventory entry per GPU of the node pool or partition, see
  docs/deploy-kubernetes.md) and the scheduler picks the physical device. The server then
  gets no ``CUDA_VISIBLE_DEVICES`` or ``GPULAB_ALLOCATED_DEVICES`` from the hub (the pool's
  slot ids are no device CUDA knows; the container runtime or Slurm sets what the job may
  see, and gpulab.clusters reads that), and ``GPULAB_LEDGER_SLOTS`` names the slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traitlets import Dict, HasTraits, validate

from gpulab.quota.profiles import Profile, parse_spawn_options

# Settings a profile may carry in every spawner; each spawner adds its own.
COMMON_SETTINGS = ("mem_limit", "cpu_limit")


class ProfileResourcesMixin(HasTraits):
    """Per-profile resources and the admitted profile, for spawners over
    ``QuotaSpawnerMixin``.

    Override points: ``profile_settings_allowed`` (the keys a profile's entry in
    ``profile_resources`` may hold for this spawner) and ``apply_profile(profile,
    settings)`` (set the base spawner's traits from them; the default sets ``mem_limit``
    and ``cpu_limit``).
    """

    profile_settings_allowed: tuple[str, ...] = COMMON_SETTINGS

    profile_resources = Dict(
        config=True,
        help="""Resources per spawn profile, by profile name ("cpu", "1-gpu", "2-gpus",
        "mig-1g.10gb", ...; "*" for every profile without an entry of its own), e.g.
        {"cpu": {"mem_limit": "4G", "cpu_limit": 2}, "1-gpu": {"mem_limit": "32G",
        "cpu_limit": 8}}. A profile without an entry keeps the spawner's own mem_limit and
        cpu_limit. The keys each spawner accepts are listed in its class docstring.""",
    )

    @validate("profile_resources")
    def _check_profile_resources(self, proposal):
        value = proposal["value"]
        cls = type(self).__name__
        for name, settings in value.items():
            if not isinstance(settings, Mapping):
                raise ValueError(
                    f"{cls}.profile_resources[{name!r}] must be a dict of settings, "
                    f"not {settings!r}"
                )
            unknown = sorted(set(settings) - set(self.profile_settings_allowed))
            if unknown:
                raise ValueError(
                    f"{cls}.profile_resources[{name!r}] has unknown settings {unknown}; "
                    f"accepted: {sorted(self.profile_settings_allowed)}"
                )
        return value

    def admitted_profile(self) -> Profile | None:
        """The profile the ledger admitted for the server starting now (None before
        admission). The same parse the mixin's ``start()`` did, on the same options."""
        policy = getattr(self, "_spawn_policy", None)
        if policy is None:
            return None
        return parse_spawn_options(self.user_options or {}, self._offered(policy))

    def settings_for(self, profile: Profile) -> dict[str, Any]:
        entries = self.profile_resources
        return dict(entries.get(profile.name, entries.get("*", {})))

    _configured: dict[str, Any] | None = None  # the spawner's own values, before profiles

    def apply_profile(self, profile: Profile, settings: Mapping[str, Any]) -> None:
        """Set the base spawner's traits for ``profile`` (called once admitted); a setting
        the profile leaves out gets the spawner's configured value back (a spawner object
        serves one server, spawn after spawn, with different profiles)."""
        if self._configured is None:
            self._configured = {key: getattr(self, key) for key in COMMON_SETTINGS}
        for key in COMMON_SETTINGS:
            setattr(self, key, settings.get(key, self._configured[key]))

    def apply_admitted_profile(self) -> Profile | None:
        profile = self.admitted_profile()
        if profile is not None:
            self.apply_profile(profile, self.settings_for(profile))
        return profile


def scheduler_placed_env(env: dict[str, str], slots: tuple[str, ...]) -> dict[str, str]:
    """``env`` for a server whose GPUs the scheduler picks (see the module docstring)."""
    env = dict(env)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("GPULAB_ALLOCATED_DEVICES", None)
    env["GPULAB_LEDGER_SLOTS"] = ",".join(slots)
    return env


def pool_inventory(
    pool: str,
    gpus: int,
    *,
    name: str,
    memory_gib: float,
    mig_slices: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """A static inventory (``c.GpulabQuota.static_gpus``) for a scheduler-placed pool:
    ``gpus`` whole GPUs called ``<pool>-gpu-NNNN`` and, per MIG profile, that many slices
    (``<pool>-mig-<profile>-NNNN``). The ledger grants slots of it; the scheduler picks the
    device. ``pool`` is letters, digits and '-'."""
    if not pool or not all(ch.isalnum() or ch == "-" for ch in pool):
        raise ValueError(f"pool must be letters, digits and '-', not {pool!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"gpus must be a whole number >= 0, not {gpus!r}")
    memory = int(memory_gib * 2**30)
    entries: list[dict[str, Any]] = [
        {"uuid": f"{pool}-gpu-{i:04d}", "name": name, "memory_bytes": memory, "index": i}
        for i in range(gpus)
    ]
    for profile, count in sorted((mig_slices or {}).items()):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"mig_slices[{profile!r}] must be a whole number >= 0, not {count!r}")
        gib = _profile_memory_gib(profile)
        for i in range(count):
            entries.append({
                "uuid": f"{pool}-mig-{profile}-{i:04d}",
                "name": f"{name} MIG {profile}",
                "memory_bytes": int(gib * 2**30),
                "mig_parent_uuid": f"{pool}-mig-parent",
                "profile": profile,
            })
    return entries


def _profile_memory_gib(profile: str) -> float:
    # "1g.10gb" -> 10, "3g.40gb+me" -> 40; unknown shapes are refused so a typo shows.
    try:
        return float(profile.split(".")[1].split("gb")[0])
    except (IndexError, ValueError):
        raise ValueError(f"MIG profile must look like '1g.10gb', not {profile!r}") from None
