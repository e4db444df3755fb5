"""``gpulab quota show|set|usage``: operators' quota tools over the ledger.

Policies come from two places, lowest precedence first: the hub's config file
(``c.GpulabQuota.default_policy``, ``group_policies``, ``user_policies`` in
jupyterhub_config.py) and operator overrides kept in the ledger, which win field by field
at their level and are audited. These commands read and write the ledger only: ``show``
reports the overrides (and a user's policy as the overrides alone resolve it), not the
config file's policies; the quota service's ``GET api/policies`` shows both, merged.

The ledger's URL: ``--ledger URL``, else ``$GPULAB_LEDGER_URL``, else
``sqlite:///$GPULAB_STATE_DIR/ledger.sqlite`` (``GPULAB_STATE_DIR`` defaults to ./var).
Exit status: 0 done; 1 the database failed; 2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
from typing import Any

from gpulab.ledger_cli import CommandError, add_ledger_argument, command, open_ledger
from gpulab.quota.policy import CONFIG_KEYS, PolicyError, PolicyLevel, PolicySet, override_setting
from gpulab.quota.reservations_cli import add_reserve_command
from gpulab.units import format_duration, parse_duration

PRECEDENCE = (
    "Precedence: config file (jupyterhub_config.py) < operator overrides in the ledger, "
    "field by field at each level; these commands see the ledger only."
)
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?([0-9]*\.[0-9]+|[0-9]+\.[0-9]*)")


def parse_value(key: str, text: str) -> Any:
    """A ``key=value`` value: "none" -> None; profiles -> a comma-separated list; whole
    and decimal numbers -> numbers; anything else stays a string ("1d") for the policy's
    own validation, whose message names the setting."""
    if text.strip().lower() == "none":
        return None
    if key == "profiles":
        return [name.strip() for name in text.split(",")]
    if _INT.fullmatch(text.strip()):
        return int(text)
    if _FLOAT.fullmatch(text.strip()):
        return float(text)
    return text


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CommandError(f"expected KEY=VALUE (keys: {', '.join(CONFIG_KEYS)}), not {pair!r}")
        if not text.strip():
            raise CommandError(f"{key}= needs a value (a number, a duration, a list or 'none')")
        if key in config:
            raise CommandError(f"{key} is given twice")
        config[key] = parse_value(key, text)
    return config


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.default:
        return "default", ""
    if args.group is not None:
        return "group", args.group
    return "user", args.user


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return args.actor
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = f"uid {os.getuid()}"
    return f"cli:{name}"


def _shown(config: dict[str, Any]) -> str:
    """A level's limits on one line, durations as "1d"."""
    if not config:
        return "(none)"
    parts = []
    for key, value in config.items():
        if key in ("window", "max_session") and value is not None:
            value = format_duration(value)
        elif isinstance(value, list):
            value = ",".join(value)
        parts.append(f"{key}={'none' if value is None else value}")
    return " ".join(parts)


def set_policy(args: argparse.Namespace) -> int:
    level, name = _target(args)
    changes = parse_assignments(args.assignments)
    unset = list(args.unset or [])
    for key in unset:
        if key not in CONFIG_KEYS:
            raise CommandError(f"--unset {key}: not a policy key (keys: {', '.join(CONFIG_KEYS)})")
    if not (changes or unset or args.replace):
        raise CommandError("nothing to set: give KEY=VALUE pairs, --unset KEY or --replace")
    try:
        setting = override_setting(level, name)
        # Validate what was typed before reading the ledger (its errors name the key).
        PolicyLevel(changes, setting=setting)
    except PolicyError as e:
        raise CommandError(str(e)) from None
    with open_ledger(args.ledger) as ledger:
        current = ledger.policy_overrides()
        kind = {"default": "defaults", "group": "groups", "user": "users"}[level]
        old = current[kind] if level == "default" else current[kind].get(name, {})
        new = {} if args.replace else dict(old)
        new.update(changes)
        for key in unset:
            new.pop(key, None)
        try:
            ledger.set_policy(level, name, new, actor=_actor(args))
        except PolicyError as e:
            raise CommandError(str(e)) from None
        now = ledger.policy_overrides()
    stored = now[kind] if level == "default" else now[kind].get(name, {})
    where = "the defaults" if level == "default" else f"{level} {name!r}"
    verb = "unchanged" if stored == old else ("removed" if not stored else "set")
    print(f"override of {where} {verb}: {_shown(stored)}")
    return 0


def show(args: argparse.Namespace) -> int:
    groups = [g.strip() for g in (args.groups or "").split(",") if g.strip()]
    if groups and not args.user:
        raise CommandError("--groups needs --user")
    with open_ledger(args.ledger) as ledger:
        overrides = ledger.policy_overrides()
        if not args.user:
            report: dict[str, Any] = {"overrides": overrides}
        else:
            try:
                policy = PolicySet().with_overrides(overrides).resolve(args.user, groups)
            except PolicyError as e:
                raise CommandError(f"a stored override is invalid: {e}", 1) from None
            usage = ledger.usage(args.user, since_seconds_ago=policy.window_seconds)
            left = None if policy.gpu_hours is None else policy.gpu_hours - usage.gpu_seconds / 3600
            report = {
                "user": args.user,
                "groups": groups,
                "policy": policy.to_json(),
                "usage": {
                    "window_seconds": policy.window_seconds,
                    "gpu_hours": usage.gpu_seconds / 3600,
                    "energy_kwh": usage.energy_joules / 3.6e6,
                    "gpus_held": usage.open_gpus,
                },
                "budget_left_gpu_hours": left,
                "allocations": [
                    {"id": a.id, "server": a.server, "gpus": a.gpus, "devices": a.device_uuids}
                    for a in ledger.open_allocations(args.user)
                ],
            }
    if args.json:
        print(json.dumps(report, indent=1))
    elif not args.user:
        print("Operator overrides in the ledger (the config file's policies are not shown).")
        print(f"  defaults: {_shown(overrides['defaults'])}")
        for kind in ("groups", "users"):
            for name, config in overrides[kind].items():
                print(f"  {kind[:-1]} {name}: {_shown(config)}")
        print(PRECEDENCE)
    else:
        p = report["policy"]
        print(f"{args.user} (groups: {', '.join(groups) or 'none'}), ledger overrides only:")
        print(f"  max_gpus: {_limit(p['max_gpus'])}")
        print(f"  gpu_hours: {_limit(p['gpu_hours'])} per {p['window']}")
        print(f"  max_session: {_limit(p['max_session'])}")
        print(f"  max_dask_workers: {_limit(p['max_dask_workers'])}")
        print(f"  profiles: {'all' if p['profiles'] is None else ','.join(p['profiles'])}")
        u = report["usage"]
        print(
            f"  used in the last {p['window']}: {u['gpu_hours']:.2f} GPU-hours, "
            f"{u['energy_kwh']:.3f} kWh; GPUs held: {u['gpus_held']}"
        )
        if left is not None:
            print(f"  budget left: {left:.2f} GPU-hours")
        print(PRECEDENCE)
    return 0


def _limit(value: Any) -> str:
    return "no limit" if value is None else str(value)


def usage(args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.since, name="--since")
    except ValueError as e:
        raise CommandError(str(e)) from None
    rows = []
    with open_ledger(args.ledger) as ledger:
        for name in sorted({a.user for a in ledger.allocations_since(seconds)}):
            u = ledger.usage(name, since_seconds_ago=seconds)
            rows.append(
                {
                    "user": name,
                    "gpu_hours": u.gpu_seconds / 3600,
                    "energy_kwh": u.energy_joules / 3.6e6,
                    "gpus_held": u.open_gpus,
                }
            )
    if args.json:
        print(json.dumps({"since_seconds": seconds, "users": rows}, indent=1))
        return 0
    width = max([len("user"), *(len(r["user"]) for r in rows)])
    print(f"Usage in the last {format_duration(seconds)}:")
    print(f"{'user':<{width}}  {'GPU-hours':>10}  {'energy kWh':>10}  {'GPUs held':>9}")
    for r in rows:
        print(
            f"{r['user']:<{width}}  {r['gpu_hours']:>10.2f}  {r['energy_kwh']:>10.3f}  "
            f"{r['gpus_held']:>9}"
        )
    if not rows:
        print("(no allocations in that time)")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quota",
        help="show and set quota policies, report GPU usage (the ledger)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    sub = commands.add_parser(
        "show",
        help="the operators' overrides, or one user's policy and usage",
        description="Without --user: the policy overrides kept in the ledger. With --user: "
        "that user's policy as the ledger's overrides resolve it (the config file's "
        "policies are not read here), their usage in its window and open allocations. "
        + PRECEDENCE,
    )
    sub.add_argument("--user", metavar="NAME")
    sub.add_argument("--groups", metavar="A,B", help="the user's groups, comma-separated")
    sub.add_argument("--json", action="store_true", help="print JSON")
    add_ledger_argument(sub)
    sub.set_defaults(handler=command("quota show", show))

    sub = commands.add_parser(
        "set",
        help="set an operator policy override (audited)",
        description="Set the override of one level: KEY=VALUE pairs are merged into its "
        "current override (--replace: they become the whole override; --replace alone "
        "removes it). Keys: " + ", ".join(CONFIG_KEYS) + ". Values: numbers, durations "
        "like 1d or 8h, comma-separated profiles, 'none' for no limit. Example: "
        "gpulab quota set --group physics max_gpus=2 gpu_hours=10 window=1d "
        "profiles=cpu,1-gpu. A bad key or value exits 2 and writes nothing. " + PRECEDENCE,
    )
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument("--default", action="store_true", help="the defaults for everyone")
    target.add_argument("--group", metavar="NAME", help="a JupyterHub group")
    target.add_argument("--user", metavar="NAME", help="a user")
    sub.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    sub.add_argument("--unset", action="append", metavar="KEY", help="drop KEY from the override")
    sub.add_argument("--replace", action="store_true", help="replace the whole override")
    sub.add_argument("--actor", help="who, for the audit log (default: cli:$USER)")
    add_ledger_argument(sub)
    sub.set_defaults(handler=command("quota set", set_policy))

    sub = commands.add_parser(
        "usage",
        help="GPU-hours, energy and GPUs held by user",
        description="A table of each user's GPU-hours, energy (kWh) and GPUs held now, over "
        "the last --since (allocations straddling its start count pro rata).",
    )
    sub.add_argument("--since", default="7d", help="a duration like 7d or 12h (default: 7d)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    add_ledger_argument(sub)
    sub.set_defaults(handler=command("quota usage", usage))

    # Class-time reservations (also under `gpulab workshop`): reserve, reservations, unreserve.
    add_reserve_command(commands)

    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
