"""Spawn profiles: the choices a user gets on the spawn form, built from the node's GPUs
and the user's policy, each saying whether it can be had now and, if not, why.

During a class-time reservation (``gpulab.quota.reservations``), ``with_reservations``
asks the ledger's own admission rule what each GPU profile would get: a user outside the
workshop sees profiles only reserved GPUs could satisfy greyed ("reserved for workshop G
until 14:00 UTC"), a member sees what the reservation still offers.

Profiles are named by their GPU count ("cpu", "1-gpu", "2-gpus", ...) so a request can
be given either as ``{"profile": "2-gpus"}`` (the form) or ``{"gpus": 2}`` (the API).
User options are untrusted: ``parse_spawn_options`` accepts exactly those two keys.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from gpulab.quota import reservations
from gpulab.quota.policy import Policy
from gpulab.units import format_duration

if TYPE_CHECKING:
    from gpulab.quota.ledger import Ledger

# GPU counts offered as profiles (those that fit the node).
GPU_COUNTS = (1, 2, 4, 8)
MAX_OPTIONS_CHARS = 4096


class BadSpawnOptions(ValueError):
    """User options that can't be a spawn request; ``field`` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Capacity:
    """What the node and the ledger say right now, for one user."""

    total_gpus: int
    free_gpus: int
    held_gpus: int  # by this user, over all their servers
    budget_left_seconds: float | None  # GPU-seconds left in the window; None = no budget
    budget_renews_in_seconds: float | None = None  # when the oldest use leaves the window
    # MIG slices by profile ("1g.10gb") -> (total, free); total_gpus/free_gpus count whole
    # GPUs only (a GPU in MIG mode is offered as its slices).
    mig_slices: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    gpus: int
    available: bool
    reason: str = ""  # why not available; empty when it is
    mig: str | None = None  # a MIG slice profile ("1g.10gb"): one slice of that size
    note: str = ""  # about an available one (it comes from the user's workshop reservation)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "gpus": self.gpus,
            "mig": self.mig,
            "available": self.available,
            "reason": self.reason,
            "note": self.note,
        }


def profile_name(gpus: int) -> str:
    return "cpu" if gpus == 0 else f"{gpus}-gpu" if gpus == 1 else f"{gpus}-gpus"


def offered_profiles(
    policy: Policy, total_gpus: int, mig_profiles: Iterable[str] = ()
) -> list[Profile]:
    """The profiles this node offers this user, all marked available: what a request may
    name (whether it can be had now is the ledger's decision). Whole GPUs by count, then
    one profile per MIG slice size ("mig-1g.10gb")."""
    profiles = []
    for gpus in [0, *(n for n in GPU_COUNTS if n <= total_gpus)]:
        display = "CPU only" if gpus == 0 else f"{gpus} GPU" + ("s" if gpus > 1 else "")
        profiles.append(Profile(profile_name(gpus), display, gpus, available=True))
    for mig in sorted(set(mig_profiles)):
        profiles.append(Profile(f"mig-{mig}", f"MIG slice {mig}", 1, available=True, mig=mig))
    # Profiles outside the policy are not offered to this user at all.
    return [p for p in profiles if policy.profiles is None or p.name in policy.profiles]


def build_profiles(policy: Policy, capacity: Capacity) -> list[Profile]:
    """The profiles of this node for this user, unavailable ones with their reason."""
    profiles = []
    for profile in offered_profiles(policy, capacity.total_gpus, capacity.mig_slices):
        reason = _unavailable_reason(profile, policy, capacity)
        profiles.append(replace(profile, available=not reason, reason=reason))
    return profiles


def _unavailable_reason(profile: Profile, policy: Policy, capacity: Capacity) -> str:
    gpus = profile.gpus
    if gpus == 0:
        return ""
    if policy.max_gpus is not None and capacity.held_gpus + gpus > policy.max_gpus:
        if capacity.held_gpus:
            return f"you hold {capacity.held_gpus} of your {policy.max_gpus} GPUs at once"
        return f"your limit is {policy.max_gpus} GPU{'s' if policy.max_gpus != 1 else ''} at once"
    if capacity.budget_left_seconds is not None and capacity.budget_left_seconds <= 0:
        window = format_duration(policy.window_seconds)
        if capacity.budget_renews_in_seconds:
            renews = format_duration(capacity.budget_renews_in_seconds)
            return f"your GPU-hours for the last {window} are used up; some return in {renews}"
        return f"your GPU-hours for the last {window} are used up"
    if profile.mig is not None:
        total, free = capacity.mig_slices.get(profile.mig, (0, 0))
        return "" if free else f"all {total} {profile.mig} slices are in use"
    if gpus > capacity.free_gpus:
        if capacity.free_gpus == 0:
            return f"all {capacity.total_gpus} GPUs are in use"
        return f"only {capacity.free_gpus} of {capacity.total_gpus} GPUs are free"
    return ""


def with_reservations(
    profiles: list[Profile], ledger: Ledger, capacity: Capacity, *, policy: Policy,
    groups: Iterable[str],
) -> list[Profile]:
    """``profiles`` (from ``build_profiles``) as the reservations leave them for a user in
    ``groups`` now, by the rule ``Ledger.admit`` applies (``reservations.admission``, in
    one read transaction): a GPU profile admission would refuse is greyed with a short
    reason; one that would draw on the user's workshop reservation gets a note saying
    so. Profiles already greyed keep their reason (the form shows the first obstacle)."""
    if not any(p.gpus and p.available for p in profiles):
        return profiles  # nothing a reservation could change (a CPU-only node, say)
    groups = list(groups)
    out = []
    with ledger._transaction(write=False) as (conn, now):
        for profile in profiles:
            if profile.gpus == 0 or not profile.available:
                out.append(profile)
                continue
            free = (capacity.free_gpus if profile.mig is None
                    else capacity.mig_slices.get(profile.mig, (0, 0))[1])
            decision = reservations.admission(
                conn, now, groups=groups, gpus=profile.gpus, mig=profile.mig, free=free,
                horizon_seconds=policy.max_session_seconds,
            )
            if decision is None:
                out.append(profile)
            elif isinstance(decision, reservations.Refusal):
                reason = _reservation_reason(conn, now, decision, profile)
                out.append(replace(profile, available=False, reason=reason))
            else:
                row = _reservation_row(conn, decision)
                note = (f"from workshop {row.group}'s reservation of "
                        f"{_count(row.gpus, profile.mig)}, until "
                        f"{reservations.clock(row.ends_at, now)}")
                out.append(replace(profile, note=note))
    return out


def _count(n: int, mig: str | None) -> str:
    return f"{n} {mig} slice{'s' * (n != 1)}" if mig else f"{n} GPU{'s' * (n != 1)}"


def _reservation_row(conn, reservation_id: int):
    table = reservations.reservations_table
    return conn.execute(select(table).where(table.c.id == reservation_id)).one()


def _reservation_reason(conn, now: datetime, refusal, profile: Profile) -> str:
    """The form's short text for an admission refusal by reservation."""
    clock = reservations.clock
    figures = refusal.figures
    if refusal.reason == "reservation_full":
        row = _reservation_row(conn, figures["reservation_id"])
        return (f"your workshop {row.group} has {_count(row.gpus, profile.mig)} reserved until "
                f"{clock(row.ends_at, now)}; {figures['in_use']} in use")
    holders = []
    for reservation_id in figures.get("reservations", []):
        row = _reservation_row(conn, reservation_id)
        window = (f"until {clock(row.ends_at, now)}" if row.starts_at <= now
                  else f"from {clock(row.starts_at, now)} until {clock(row.ends_at, now)}")
        holders.append(f"workshop {row.group} {window}")
    return "reserved for " + "; ".join(holders or ["a workshop"])


def parse_spawn_options(options: Mapping, profiles: list[Profile]) -> Profile:
    """The profile a request asks for; BadSpawnOptions naming the field otherwise.

    Accepts ``{"profile": NAME}`` or ``{"gpus": N}`` (not both), nothing else. An empty
    request means the first profile (CPU only). Availability is not checked here: the
    ledger's admission decides that atomically.
    """
    if not isinstance(options, Mapping):
        raise BadSpawnOptions("options", "spawn options must be an object")
    if len(repr(options)) > MAX_OPTIONS_CHARS:
        raise BadSpawnOptions(
            "options", f"spawn options are too large (over {MAX_OPTIONS_CHARS} characters)"
        )
    unknown = sorted(set(options) - {"profile", "gpus"})
    if unknown:
        shown = ", ".join(repr(str(k)[:40]) for k in unknown[:5])
        raise BadSpawnOptions(unknown[0], f"unknown spawn option {shown}: use 'profile' or 'gpus'")
    if "profile" in options and "gpus" in options:
        raise BadSpawnOptions("gpus", "give either 'profile' or 'gpus', not both")
    by_name = {p.name: p for p in profiles}
    if "gpus" in options:
        gpus = options["gpus"]
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise BadSpawnOptions("gpus", f"gpus must be a whole number >= 0, not {gpus!r:.40}")
        profile = by_name.get(profile_name(gpus))
        if profile is None:
            offered = ", ".join(str(p.gpus) for p in profiles)
            raise BadSpawnOptions(
                "gpus", f"gpus={gpus} is not offered here; choose one of {offered}"
            )
        return profile
    name = options.get("profile", profiles[0].name if profiles else "cpu")
    if not isinstance(name, str) or name not in by_name:
        offered = ", ".join(by_name)
        raise BadSpawnOptions(
            "profile", f"profile {str(name)[:40]!r} is not offered here; choose one of {offered}"
        )
    return by_name[name]


def render_form(profiles: list[Profile]) -> str:
    """The spawn form's HTML: one radio button per profile; unavailable ones greyed with
    their reason. Every text is escaped."""
    rows = []
    first_available = next((p.name for p in profiles if p.available), None)
    for p in profiles:
        name = html.escape(p.name, quote=True)
        checked = " checked" if p.name == first_available else ""
        disabled = "" if p.available else " disabled"
        reason = (
            f' <span class="gpulab-profile-reason text-muted">({html.escape(p.reason)})</span>'
            if p.reason
            else ""
        )
        if p.note:
            note = html.escape(p.note)
            reason += f' <span class="gpulab-profile-note text-muted">({note})</span>'

        rows.append(
            f'<div class="radio gpulab-profile" data-profile="{name}">'
            f'<label><input type="radio" name="profile" value="{name}"{checked}{disabled}> '
            f"{html.escape(p.display_name)}</label>{reason}</div>"
        )
    return (
        '<fieldset class="gpulab-profiles"><legend>Resources</legend>'
        + "".join(rows)
        + "</fieldset>"
    )
