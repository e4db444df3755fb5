"""``reserve``, ``reservations`` and ``unreserve``: class-time GPU reservations from the
command line (``gpulab workshop reserve ...``, and ``gpulab quota reserve ...``).

    gpulab quota reserve ml101 --gpus 4 --from 2026-11-24T10:00+01:00 --until 2026-11-24T12:00+01:00
    gpulab quota reservations
    gpulab quota unreserve 3

The pool's size (``--capacity``) defaults to what NVML sees on this machine: whole GPUs, or
with ``--mig 1g.10gb`` the slices of that size. On a machine that is not the GPU node (or
with a static inventory), give it. The ledger's URL: ``--ledger URL`` (or
``--ledger-url``), else ``$GPULAB_LEDGER_URL``, else the state folder's SQLite file.
Exit status: 0 done; 1 the database failed; 2 bad input or a refused reservation (nothing
written).
"""

from __future__ import annotations

import argparse
import json

from gpulab.ledger_cli import LEDGER_HELP, CommandError, command, open_ledger
from gpulab.quota.reservations import (
    Reservation,
    ReservationError,
    UnknownReservation,
    cancel,
    list_reservations,
    reserve,
)


def _ledger_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", "--ledger-url", dest="ledger", metavar="URL", help=LEDGER_HELP)


def node_capacity(mig: str | None) -> int:
    """Devices of the pool on this machine as NVML sees them (0 without NVML)."""
    from gpulab.gpus import detect_inventory

    devices = detect_inventory().devices()
    if mig:
        return sum(1 for gpu in devices if gpu.is_mig and gpu.profile == mig)
    return sum(1 for gpu in devices if not gpu.is_mig)


def _actor(args: argparse.Namespace) -> str:
    from gpulab.quota.cli import _actor as quota_actor

    return quota_actor(args)


def _line(r: Reservation) -> str:
    state = "cancelled" if r.cancelled_at else f"{r.in_use} in use"
    return (
        f"{r.id:>4}  {r.group:<20}  {r.gpus:>3} {r.pool:<10}  {r.starts_at.isoformat()}  "
        f"{r.ends_at.isoformat()}  {state}"
    )


def add(args: argparse.Namespace) -> int:
    capacity = args.capacity
    if capacity is None:
        capacity = node_capacity(args.mig)
        if capacity == 0:
            what = f"{args.mig} MIG slices" if args.mig else "GPUs"
            raise CommandError(
                f"NVML finds no {what} on this machine: give --capacity N, the node's {what}"
            )
    with open_ledger(args.ledger) as ledger:
        try:
            r = reserve(
                ledger,
                args.name,
                args.gpus,
                args.start,
                args.end,
                capacity=capacity,
                mig=args.mig,
                actor=_actor(args),
            )
        except ReservationError as e:
            raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(r.to_json(), indent=1))
        return 0
    print(
        f"reservation {r.id}: {r.gpus} {r.pool} for group {r.group!r} from "
        f"{r.starts_at.isoformat()} until {r.ends_at.isoformat()}"
    )
    if r.held_now:
        print(
            f"note: {r.held_now} of the node's {capacity} {r.pool} are held now; servers "
            "already running are not stopped when the window opens"
        )
    return 0


def show(args: argparse.Namespace) -> int:
    with open_ledger(args.ledger) as ledger:
        found = list_reservations(ledger, group=args.group, include_past=args.all)
    if args.json:
        print(json.dumps([r.to_json() for r in found], indent=1))
        return 0
    print(f"{'id':>4}  {'group':<20}  {'devices':<14}  {'from':<25}  {'until':<25}  state")
    for r in found:
        print(_line(r))
    if not found:
        print("(no reservations)" if args.all else "(no current or upcoming reservations)")
    return 0


def remove(args: argparse.Namespace) -> int:
    with open_ledger(args.ledger) as ledger:
        try:
            r = cancel(ledger, args.id, actor=_actor(args))
        except (UnknownReservation, ReservationError) as e:
            raise CommandError(str(e)) from None
    print(f"reservation {r.id} ({r.gpus} {r.pool} for {r.group!r}) cancelled")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_reserve_command(subparsers) -> None:
    """Add ``reserve``, ``reservations`` and ``unreserve`` to ``subparsers`` (the commands
    of ``gpulab quota`` or ``gpulab workshop``)."""
    # Error messages name the command as typed: "gpulab quota reserve: ...".
    parent = getattr(subparsers, "_prog_prefix", "gpulab").removeprefix("gpulab").strip()
    prefix = f"{parent} " if parent else ""
    sub = subparsers.add_parser(
        "reserve",
        help="hold GPUs for a group during a time window (class time)",
        description="Hold N GPUs (or N MIG slices of one size) for the JupyterHub group NAME "
        "from --from until --until. During the window its members draw only on them, and "
        "others see the node's capacity minus the unused reserved devices (also before it, "
        "if their servers could still run then). Overlapping reservations that together "
        "exceed the node are refused. Times: ISO 8601 with a timezone, e.g. "
        "2026-11-24T10:00+01:00 or 2026-11-24T09:00Z.",
    )
    sub.add_argument("name", metavar="NAME", help="the group (a workshop)")
    sub.add_argument("--gpus", type=_positive, required=True, metavar="N")
    sub.add_argument("--from", dest="start", required=True, metavar="ISO")
    sub.add_argument("--until", dest="end", required=True, metavar="ISO")
    sub.add_argument("--mig", metavar="PROFILE", help="reserve MIG slices of this size")
    sub.add_argument(
        "--capacity",
        type=int,
        metavar="N",
        help="the node's GPUs (or slices of --mig); default: as NVML sees this machine",
    )
    sub.add_argument("--actor", help="who, for the audit log (default: cli:$USER)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    _ledger_option(sub)
    sub.set_defaults(handler=command(f"{prefix}reserve", add))

    sub = subparsers.add_parser(
        "reservations",
        help="list reservations",
        description="Current and upcoming reservations (--all: also past and cancelled), "
        "with the devices drawn on each now.",
    )
    sub.add_argument("--group", metavar="NAME")
    sub.add_argument("--all", action="store_true", help="include past and cancelled ones")
    sub.add_argument("--json", action="store_true", help="print JSON")
    _ledger_option(sub)
    sub.set_defaults(handler=command(f"{prefix}reservations", show))

    sub = subparsers.add_parser(
        "unreserve",
        help="cancel a reservation",
        description="Cancel reservation ID: its devices are everyone's again at once; "
        "servers drawing on it keep running.",
    )
    sub.add_argument("id", type=_positive, metavar="ID")
    sub.add_argument("--actor", help="who, for the audit log (default: cli:$USER)")
    _ledger_option(sub)
    sub.set_defaults(handler=command(f"{prefix}unreserve", remove))
