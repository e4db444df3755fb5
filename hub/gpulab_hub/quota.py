"""The hub's one quota object: the node's GPU inventory, the policies and the ledger.

Configured as ``c.GpulabQuota.*`` and shared by every spawner of the hub process
(``GpulabQuota.instance(config=...)``). Built eagerly at the first spawner so that a
config error (a negative limit, an unknown unit or group) names its setting instead of
surfacing at someone's spawn.
"""

from __future__ import annotations

from traitlets import Any, Dict, Unicode
from traitlets.config import SingletonConfigurable

from gpulab.gpus import Inventory, StaticInventory, detect_inventory
from gpulab.quota.ledger import Ledger
from gpulab.quota.policy import Policy, PolicySet
from gpulab.quota.profiles import Capacity


class GpulabQuota(SingletonConfigurable):
    ledger_url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy URL of the quota ledger: a SQLite file on one machine
        (sqlite:////path/ledger.sqlite), PostgreSQL in production
        (postgresql+psycopg://user@host/db). Required: the hub refuses GPU spawns without it.""",
    )

    static_gpus = Any(
        None,
        allow_none=True,
        config=True,
        help="""The GPUs of this node when NVML can't be asked: a list of
        {"uuid", "name", "memory_bytes", ...} dicts, or a number N for N identical GPUs
        (tests, demos). None (the default) asks NVML; no NVML means no GPUs (CPU only).""",
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
        help="""Limits per user name, same fields; they replace the defaults and groups.""",
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

    def _make_inventory(self) -> Inventory:
        if isinstance(self.static_gpus, int) and not isinstance(self.static_gpus, bool):
            if self.static_gpus < 0:
                raise ValueError(
                    f"GpulabQuota.static_gpus must be a count >= 0 or a list, "
                    f"not {self.static_gpus!r}"
                )
            return StaticInventory.synthetic(self.static_gpus)
        return detect_inventory(static=self.static_gpus)

    def device_uuids(self) -> list[str]:
        return [gpu.uuid for gpu in self.inventory.devices()]

    def policy_for(self, username: str, groups: list[str]) -> Policy:
        return self.policies.resolve(username, groups)

    def capacity_for(self, username: str, policy: Policy) -> Capacity:
        devices = self.device_uuids()
        open_allocations = self.ledger.open_allocations()
        in_use = {uuid for a in open_allocations for uuid in a.device_uuids}
        usage = self.ledger.usage(username, since_seconds_ago=policy.window_seconds)
        budget_left = None
        if policy.gpu_hours is not None:
            budget_left = policy.gpu_hours * 3600 - usage.gpu_seconds
        return Capacity(
            total_gpus=len(devices),
            free_gpus=len([d for d in devices if d not in in_use]),
            held_gpus=usage.open_gpus,
            budget_left_seconds=budget_left,
        )
