"""The accountant: what the quota does while servers run.

One ``tick()`` (every half minute or so, from the hub's quota service):

1. accrue GPU-seconds (database clock) and the energy each allocation's devices drew
   since the last tick (NVML's cumulative counters, by device UUID);
2. reconcile: an open allocation whose server the hub no longer runs is closed
   (``reconciled``), after ``reconcile_after_seconds`` so a spawn in flight is not hit;
3. enforce, per allocation with GPUs: a GPU-hour budget or a session length that will run
   out within ``warn_before_seconds`` gets a ``warned`` event (once) with its deadline,
   the deadline being the moment it runs out plus ``grace_seconds``; past the deadline
   the allocation is closed (``budget`` or ``session_limit``) and its server must stop;
   GPUs idle (0 % utilisation) for ``gpu_idle_seconds`` are closed as ``gpu_idle``;
4. report which servers to stop and which are busy on their GPUs (the hub marks those
   active so HTTP-idle culling spares them).

The accountant decides and writes the ledger; it never stops anything itself: the
adapter (``gpulab_hub.quota_service``) asks the hub to stop what ``tick()`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gpulab.gpus import Inventory
from gpulab.quota.ledger import Allocation, Ledger
from gpulab.quota.policy import Policy
from gpulab.units import format_duration

ServerKey = tuple[str, str]  # (user, server name; "" for the default server)


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the domain word; builtins.Warning is not used here
    user: str
    server: str
    allocation_id: int
    kind: str  # "budget" or "session_limit"
    deadline: datetime
    message: str

    def to_json(self) -> dict:
        return {
            "allocation_id": self.allocation_id,
            "server": self.server,
            "kind": self.kind,
            "deadline": self.deadline.isoformat(),
            "message": self.message,
        }


@dataclass
class TickReport:
    stop: list[tuple[Allocation, str]] = field(default_factory=list)  # (allocation, reason)
    warned: list[Warning] = field(default_factory=list)  # new warnings this tick
    reconciled: list[Allocation] = field(default_factory=list)
    busy: list[Allocation] = field(default_factory=list)  # GPUs in use: keep them alive


class Accountant:
    def __init__(
        self,
        ledger: Ledger,
        inventory: Inventory,
        policy_for: Callable[[str], Policy],
        *,
        warn_before_seconds: float = 900,
        grace_seconds: float = 300,
        gpu_idle_seconds: float | None = None,
        reconcile_after_seconds: float = 300,
    ):
        self.ledger = ledger
        self.inventory = inventory
        self.policy_for = policy_for
        self.warn_before = timedelta(seconds=warn_before_seconds)
        self.grace = timedelta(seconds=grace_seconds)
        self.gpu_idle = None if gpu_idle_seconds is None else timedelta(seconds=gpu_idle_seconds)
        self.reconcile_after = timedelta(seconds=reconcile_after_seconds)
        self._energy_seen: dict[str, float] = {}  # device UUID -> last cumulative joules
        self._idle_since: dict[int, datetime] = {}  # allocation id -> first idle reading
        self._culled: dict[ServerKey, tuple[Allocation, str]] = {}  # closed, server not stopped

    def tick(self, running: Iterable[ServerKey]) -> TickReport:
        running = set(running)
        report = TickReport()
        open_allocations = self.ledger.accrue(self._energy_deltas())
        now = self.ledger.db_now()
        telemetry = self.inventory.telemetry(
            uuid for a in open_allocations for uuid in a.device_uuids
        )
        warned = self._warned()
        for allocation in open_allocations:
            key = (allocation.user, allocation.server)
            if key not in running:
                if now - allocation.granted_at >= self.reconcile_after:
                    report.reconciled.append(
                        self.ledger.release(allocation.id, reason="reconciled", actor="gpulab")
                    )
                continue
            if not allocation.gpus:
                continue
            reason = self._enforce(allocation, now, warned, report)
            reason = reason or self._gpu_idle(allocation, now, telemetry)
            if reason:
                closed = self.ledger.release(allocation.id, reason=reason, actor="gpulab")
                self._culled[key] = (closed, reason)
                self._idle_since.pop(allocation.id, None)
            elif any(
                (t := telemetry.get(uuid)) and (t.utilization_percent or 0) > 0
                for uuid in allocation.device_uuids
            ):
                report.busy.append(allocation)
        # Culled servers stay on the list until the hub has stopped them.
        self._culled = {key: value for key, value in self._culled.items() if key in running}
        report.stop = list(self._culled.values())
        return report

    def warnings(self, user: str) -> list[Warning]:
        """The standing warnings of ``user``'s open allocations (for the quota API)."""
        open_ids = {a.id: a for a in self.ledger.open_allocations(user)}
        found = {}
        for event in self.ledger.audit(user, action="warned", limit=100):
            if event.allocation_id in open_ids and event.allocation_id not in found:
                detail = event.detail or {}
                found[event.allocation_id] = Warning(
                    user=user,
                    server=open_ids[event.allocation_id].server,
                    allocation_id=event.allocation_id,
                    kind=event.reason or "",
                    deadline=datetime.fromisoformat(detail["deadline"]),
                    message=detail.get("message", ""),
                )
        return list(found.values())

    # the parts of a tick --------------------------------------------------------------

    def _energy_deltas(self) -> dict[int, float]:
        """Joules each open allocation's devices drew since the last tick."""
        open_allocations = self.ledger.open_allocations()
        uuids = [uuid for a in open_allocations for uuid in a.device_uuids]
        readings = self.inventory.telemetry(uuids)
        deltas: dict[int, float] = {}
        for allocation in open_allocations:
            for uuid in allocation.device_uuids:
                joules = readings.get(uuid) and readings[uuid].energy_joules
                if joules is None:
                    continue
                previous = self._energy_seen.get(uuid)
                self._energy_seen[uuid] = joules
                # First reading, or the counter reset (driver reload): no delta to charge.
                if previous is not None and joules >= previous:
                    deltas[allocation.id] = deltas.get(allocation.id, 0.0) + joules - previous
        return deltas

    def _warned(self) -> set[tuple[int, str]]:
        return {
            (event.allocation_id, event.reason or "")
            for event in self.ledger.audit(action="warned", limit=10_000)
        }

    def _enforce(self, allocation: Allocation, now, warned, report) -> str | None:
        """Warn about, or end, an allocation over its budget or session length.

        Both limits are measured from the ledger alone (usage, ``granted_at``), so the
        decision survives a restart of the service and needs no remembered deadline.
        """
        policy = self.policy_for(allocation.user)
        for kind, left in (
            ("budget", self._budget_left(allocation, policy)),
            ("session_limit", self._session_left(allocation, policy, now)),
        ):
            if left is None or left > self.warn_before:
                continue
            if (allocation.id, kind) not in warned:
                deadline = now + left + self.grace
                warning = Warning(
                    user=allocation.user,
                    server=allocation.server,
                    allocation_id=allocation.id,
                    kind=kind,
                    deadline=deadline,
                    message=self._warning_text(kind, policy, deadline - now),
                )
                self.ledger.record_event(
                    "warned",
                    user=allocation.user,
                    allocation_id=allocation.id,
                    actor="gpulab",
                    reason=kind,
                    detail={"deadline": deadline.isoformat(), "message": warning.message},
                )
                report.warned.append(warning)
            if left <= -self.grace:
                return kind
        return None

    def _budget_left(self, allocation, policy: Policy) -> timedelta | None:
        """Wall time until the user's GPU-hours run out at their current rate (negative:
        how long ago they did)."""
        if policy.gpu_hours is None:
            return None
        usage = self.ledger.usage(allocation.user, since_seconds_ago=policy.window_seconds)
        left = policy.gpu_hours * 3600 - usage.gpu_seconds
        return timedelta(seconds=left / max(usage.open_gpus, 1))

    def _session_left(self, allocation, policy: Policy, now) -> timedelta | None:
        if policy.max_session_seconds is None:
            return None
        return allocation.granted_at + timedelta(seconds=policy.max_session_seconds) - now

    @staticmethod
    def _warning_text(kind: str, policy: Policy, left: timedelta) -> str:
        when = format_duration(max(0.0, left.total_seconds()))
        if kind == "budget":
            return (
                f"Your GPU-hours for the last {format_duration(policy.window_seconds)} run out: "
                f"this server will be stopped in {when}. Save your work."
            )
        return (
            f"This server reaches its maximum session length of "
            f"{format_duration(policy.max_session_seconds)}: it will be stopped in {when}. "
            "Save your work."
        )

    def _gpu_idle(self, allocation: Allocation, now, telemetry) -> str | None:
        if self.gpu_idle is None:
            return None
        readings = [telemetry.get(uuid) for uuid in allocation.device_uuids]
        utilizations = [r.utilization_percent for r in readings if r is not None]
        if not utilizations or any(u is None or u > 0 for u in utilizations):
            self._idle_since.pop(allocation.id, None)
            return None
        since = self._idle_since.setdefault(allocation.id, now)
        return "gpu_idle" if now - since >= self.gpu_idle else None
