"""``gpulab ledger backup|restore|verify``: the quota ledger from the command line.

The ledger's URL comes from ``--ledger URL``, else ``$GPULAB_LEDGER_URL``, else the
embedded default's SQLite file ``$GPULAB_STATE_DIR/ledger.sqlite`` (``GPULAB_STATE_DIR``
defaults to ``./var``, as for the hub). Only ``restore`` may create a ledger; the other
commands refuse a SQLite file that does not exist (a mistyped path would otherwise answer
from a new, empty ledger).

Exit status: 0 done; 1 the ledger is inconsistent (``verify``) or the database failed;
2 bad input (a missing or invalid file, a non-empty ledger without ``--replace``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from gpulab.quota.ledger import Ledger

LEDGER_HELP = (
    "SQLAlchemy URL of the quota ledger (default: $GPULAB_LEDGER_URL, else "
    "sqlite:///$GPULAB_STATE_DIR/ledger.sqlite with GPULAB_STATE_DIR defaulting to ./var)"
)


class CommandError(Exception):
    """A failure to report on stderr as ``gpulab <command>: message`` with ``status``."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def add_ledger_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)


def ledger_url(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The ledger URL: ``option``, else ``$GPULAB_LEDGER_URL``, else the state folder's file."""
    environ = os.environ if environ is None else environ
    if option:
        return option
    if environ.get("GPULAB_LEDGER_URL"):
        return environ["GPULAB_LEDGER_URL"]
    state = Path(environ.get("GPULAB_STATE_DIR") or "var")
    return f"sqlite:///{state.resolve() / 'ledger.sqlite'}"


def open_ledger(option: str | None, *, create: bool = False) -> Ledger:
    """Open the ledger; unless ``create``, a SQLite file must exist already."""
    url = ledger_url(option)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CommandError(f"--ledger must be a SQLAlchemy URL, not {url!r}") from None
    shown = parsed.render_as_string(hide_password=True)
    sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database
    if sqlite_file and not create and not Path(parsed.database).is_file():
        raise CommandError(f"no ledger at {shown} (no such file)")
    try:
        return Ledger(url)
    except ValueError as e:
        raise CommandError(str(e)) from None
    except SQLAlchemyError as e:
        raise CommandError(f"cannot open the ledger at {shown}: {_cause(e)}", 1) from None


def _cause(error: SQLAlchemyError) -> str:
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


def command(name: str, fn: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Wrap a handler: CommandError and database errors become a message and a status."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CommandError as e:
            print(f"gpulab {name}: {e}", file=sys.stderr)
            return e.status
        except SQLAlchemyError as e:
            print(f"gpulab {name}: the ledger's database failed: {_cause(e)}", file=sys.stderr)
            return 1

    return handler


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in counts.items())


def backup(args: argparse.Namespace) -> int:
    with open_ledger(args.ledger) as ledger:
        try:
            counts = ledger.backup(args.file)
        except OSError as e:
            raise CommandError(f"cannot write {args.file}: {e.strerror or e}") from None
    print(f"backed up {_counts(counts)} to {args.file}")
    return 0


def restore(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise CommandError(f"{args.file} is not a file")
    with open_ledger(args.ledger, create=True) as ledger:
        try:
            counts = ledger.restore(args.file, replace=args.replace)
        except ValueError as e:  # also a JSON syntax error
            message = str(e).replace("restore with replace=True", "restore with --replace")
            raise CommandError(message) from None
        except OSError as e:
            raise CommandError(f"cannot read {args.file}: {e.strerror or e}") from None
    print(f"restored {_counts(counts)} from {args.file}")
    return 0


def verify(args: argparse.Namespace) -> int:
    with open_ledger(args.ledger) as ledger:
        problems = ledger.verify()
    if problems:
        for problem in problems:
            print(problem)
        print(f"the ledger has {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("the ledger is consistent")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="back up, restore and check the quota ledger",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    sub = commands.add_parser(
        "backup",
        help="write the whole ledger to a JSON file",
        description="Write every table of the ledger, from one snapshot, to FILE (replaced "
        "atomically).",
    )
    sub.add_argument("file", metavar="FILE")
    add_ledger_argument(sub)
    sub.set_defaults(handler=command("ledger backup", backup))

    sub = commands.add_parser(
        "restore",
        help="load a backup file into the ledger",
        description="Load a `gpulab ledger backup` FILE in one transaction. The ledger must "
        "be empty (a new SQLite file is created) unless --replace.",
    )
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--replace", action="store_true", help="delete what the ledger holds first")
    add_ledger_argument(sub)
    sub.set_defaults(handler=command("ledger restore", restore))

    sub = commands.add_parser(
        "verify",
        help="check the ledger's consistency",
        description="Check that open allocations lease exactly their devices, closed ones "
        "none, and that stored policy overrides are valid. Exit 1 and list the problems if "
        "any.",
    )
    add_ledger_argument(sub)
    sub.set_defaults(handler=command("ledger verify", verify))

    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
