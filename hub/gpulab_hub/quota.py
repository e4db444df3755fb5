"""The hub's one quota object: the node's GPU inventory, the policies and the ledger.

Configured as ``c.GpulabQuota.*`` and shared by every spawner of the hub process
(``GpulabQuota.instance(config=...)``). ``gpulab hub`` builds one from the config before it
starts JupyterHub, so a config error (a negative limit, an unknown unit or group) names its
setting and the hub does not start, instead of surfacing at someone's spawn.

Policies: the config file's (``default_policy``, ``group_policies``, ``user_policies``) <
operator overrides kept in the ledger (``set_policy``: the quota API, ``gpulab quota set``).
Overrides win field by field at their level and are audited. ``policy_for`` reads them from
the ledger at every call, so the hub's spawners and the quota service (another process) see
a change at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any as AnyType

from traitlets import Any, Dict, Unicode
from traitlets.config import SingletonConfigurable

from gpulab.gpus import Inventory, StaticInventory, detect_inventory
from gpulab.quota.ledger import Ledger
from gpulab.quota.policy import OVERRIDE_LEVELS, Policy, PolicySet
from gpulab.quota.profiles import Capacity, Profile
from gpulab.quota.reservations import Reservation, reserve

# The name of the quota service in c.JupyterHub.services (its URL prefix is
# /services/gpulab-quota/).
QUOTA_SERVICE_NAME = "gpulab-quota"


class GpulabQuota(SingletonConfigurable):
    ledger_url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy URL of the quota ledger: a SQLite file on one machine
        (sqlite:////path/ledger.sqlite), PostgreSQL in production
        (postgresql+psycopg://user@host/db). Required.""",
    )

    static_gpus = Any(
        None,
        allow_none=True,
        config=True,
        help="""The GPUs of this node when NVML can't be asked: a list of
        {"uuid", "name", "memory_bytes", ...} dicts, or a number N for N identical GPUs
        (tests, demos). None (the default) asks NVML; no NVML means no GPUs (CPU only).""",
    )

    static_telemetry_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""A JSON file of readings by GPU UUID ({"GPU-...": {"utilization_percent": 0,
        "energy_joules": 12.5}}) for the static GPUs, read at each accounting round: where
        telemetry comes from outside NVML, and how tests make a GPU busy or idle.""",
    )

    default_policy = Dict(
        config=True,
        help="""Limits for everyone, e.g. {"max_gpus": 2, "gpu_hours": 100, "window": "7d",
        "max_session": "8h", "max_dask_workers": 8}. Unset fields mean no limit.""",
    )
    group_policies = Dict(
        config=True,
        help="""Limits per JupyterHub group name, same fields. A field a group sets replaces
        the default; where several of a user's groups set it, the most generous wins.""",
    )
    user_policies = Dict(
        config=True,
        help="""Limits per user name, same fields; they replace the defaults and groups.

        Operators may override any of these three at run time (the quota API's
        PUT api/policies/..., `gpulab quota set`): overrides are kept in the ledger, win
        over this file field by field at their level, and every change is audited.""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.ledger_url:
            raise ValueError("GpulabQuota.ledger_url must be set (a SQLAlchemy URL)")
        self.policies = PolicySet(
            defaults=self.default_policy, groups=self.group_policies, users=self.user_policies
        )
        self.inventory: Inventory = self._make_inventory()
        self.ledger = Ledger(self.ledger_url)
        # (the overrides as JSON, the merged PolicySet): rebuilt only when they change.
        self._merged: tuple[str, PolicySet] | None = None

    def _make_inventory(self) -> Inventory:
        if isinstance(self.static_gpus, int) and not isinstance(self.static_gpus, bool):
            if self.static_gpus < 0:
                raise ValueError(
                    f"GpulabQuota.static_gpus must be a count >= 0 or a list, "
                    f"not {self.static_gpus!r}"
                )
            devices = StaticInventory.synthetic(self.static_gpus).devices()
            return StaticInventory(devices, telemetry_file=self.static_telemetry_file)
        return detect_inventory(static=self.static_gpus, telemetry_file=self.static_telemetry_file)

    def device_uuids(self) -> list[str]:
        return [gpu.uuid for gpu in self.inventory.devices()]

    def whole_gpus(self) -> list[str]:
        """UUIDs of the GPUs handed out whole (not in MIG mode)."""
        return [gpu.uuid for gpu in self.inventory.devices() if not gpu.is_mig]

    def mig_slices(self) -> dict[str, list[str]]:
        """UUIDs of the MIG instances, by slice profile ("1g.10gb")."""
        slices: dict[str, list[str]] = {}
        for gpu in self.inventory.devices():
            if gpu.is_mig and gpu.profile:
                slices.setdefault(gpu.profile, []).append(gpu.uuid)
        return slices

    def device_pool(self, profile: Profile) -> list[str]:
        """The devices a spawn of ``profile`` may be given: slices of its size for a MIG
        profile, whole GPUs otherwise."""
        if profile.mig is not None:
            return self.mig_slices().get(profile.mig, [])
        return self.whole_gpus()

    def effective_policies(self) -> PolicySet:
        """The config's policies with the ledger's operator overrides on top, read now."""
        overrides = self.ledger.policy_overrides()
        key = json.dumps(overrides, sort_keys=True)
        merged = self._merged
        if merged is None or merged[0] != key:
            merged = self._merged = (key, self.policies.with_overrides(overrides))
        return merged[1]

    def policy_for(self, username: str, groups: list[str]) -> Policy:
        """``username``'s policy: config < operator overrides, then ``PolicySet.resolve``."""
        return self.effective_policies().resolve(username, groups)

    def set_policy(
        self, level: str, name: str, config: Mapping[str, AnyType], actor: str
    ) -> dict[str, AnyType]:
        """Set (``{}``: remove) the operator override of one level, audited; see
        ``Ledger.set_policy``. ``level`` is "default" (``name`` ""), "group" or "user";
        group names are JupyterHub's and are not checked beyond being a non-blank string
        of at most 255 characters. Raises ``PolicyError`` naming the bad field, with
        nothing written. Returns ``policy_view(level, name)`` after the change."""
        self.ledger.set_policy(level, name, config, actor=actor)
        return self.policy_view(level, name)

    def policy_view(self, level: str, name: str) -> dict[str, AnyType]:
        """One level: what the config file says, the override, and the merged result."""
        kind = OVERRIDE_LEVELS[level]
        overrides = self.ledger.policy_overrides()
        merged = self.policies.with_overrides(overrides)

        def pick(config: dict) -> dict:
            return config[kind] if level == "default" else config[kind].get(name, {})

        return {
            "level": level,
            "name": name,
            "config": pick(self.policies.to_config()),
            "override": pick(overrides),
            "effective": pick(merged.to_config()),
        }

    def policies_view(self) -> dict[str, AnyType]:
        """Every level: the config file's, the ledger's overrides and the merged result
        (each {"defaults": ..., "groups": ..., "users": ...}, durations in seconds)."""
        overrides = self.ledger.policy_overrides()
        return {
            "precedence": "config file < operator overrides (field by field, per level)",
            "config": self.policies.to_config(),
            "overrides": overrides,
            "effective": self.policies.with_overrides(overrides).to_config(),
        }

    def reserve(
        self,
        group: str,
        gpus: int,
        start: AnyType,
        end: AnyType,
        *,
        mig: str | None = None,
        actor: str | None = None,
    ) -> Reservation:
        """A class-time reservation of this node's GPUs (or ``mig`` slices) for ``group``:
        ``gpulab.quota.reservations.reserve`` with the pool's size from the inventory.
        Raises ``ReservationError`` naming the bad field, with nothing written."""
        capacity = len(self.mig_slices().get(mig, [])) if mig else len(self.whole_gpus())
        return reserve(
            self.ledger, group, gpus, start, end, capacity=capacity, mig=mig, actor=actor
        )

    def capacity_for(self, username: str, policy: Policy) -> Capacity:
        open_allocations = self.ledger.open_allocations()
        in_use = {uuid for a in open_allocations for uuid in a.device_uuids}
        usage = self.ledger.usage(username, since_seconds_ago=policy.window_seconds)
        budget_left = None
        if policy.gpu_hours is not None:
            budget_left = policy.gpu_hours * 3600 - usage.gpu_seconds
        whole = self.whole_gpus()
        return Capacity(
            total_gpus=len(whole),
            free_gpus=len([d for d in whole if d not in in_use]),
            held_gpus=usage.open_gpus,
            budget_left_seconds=budget_left,
            mig_slices={
                mig: (len(uuids), len([u for u in uuids if u not in in_use]))
                for mig, uuids in self.mig_slices().items()
            },
        )
