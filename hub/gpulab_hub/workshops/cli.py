"""``gpulab workshop create|close``: the operators' workshop commands.

A client of the hub's workshop API (``/hub/api/gpulab/workshops``, see ``api``): the hub
process does the work, in its own database transaction. The hub is found at
``--hub-url`` (default: the embedded default's public URL, from GPULAB_IP and
GPULAB_PORT); the token is ``$GPULAB_HUB_TOKEN`` (an admin's API token, from
/hub/token) or else the token the embedded default keeps for this command in
``$GPULAB_STATE_DIR/workshops-token`` (mode 0600: readable by the hub's operator only).

Exit status: 0 done; 1 the hub failed or can't be reached; 2 bad input (nothing created).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gpulab.ledger_cli import CommandError
from gpulab.quota.cli import parse_assignments

TOKEN_FILE = "workshops-token"
API_PATH = "/hub/api/gpulab/workshops"
TIMEOUT_SECONDS = 600.0  # closing a class of 40 stops 40 servers


def _settings():
    from gpulab_hub.settings import EmbeddedSettings, SettingsError

    try:
        return EmbeddedSettings.from_env()
    except SettingsError as e:
        raise CommandError(str(e)) from None


def hub_url(args: argparse.Namespace) -> str:
    return (args.hub_url or _settings().public_url).rstrip("/")


def hub_token() -> str:
    token = os.environ.get("GPULAB_HUB_TOKEN", "").strip()
    if token:
        return token
    path = _settings().state_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError as e:
        raise CommandError(
            f"no API token: set GPULAB_HUB_TOKEN to an admin's token (/hub/token), or run "
            f"where {path} can be read ({e.strerror})"
        ) from None


def call_hub(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"token {hub_token()}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"message": raw[:500].decode(errors="replace")}
        return e.code, answer if isinstance(answer, dict) else {"message": str(answer)}
    except (urllib.error.URLError, OSError) as e:
        raise CommandError(f"the hub at {url} can't be reached: {e}", 1) from None


def fail_from(status: int, answer: dict[str, Any]) -> CommandError:
    message = answer.get("message") or f"the hub answered {status}"
    return CommandError(message, 2 if 400 <= status < 500 else 1)


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CommandError(f"{option} needs at least one name")
    return names


def write_passwords(path: Path, students: list[dict[str, Any]]) -> None:
    """A CSV (username, password) at ``path``, mode 0600, never over an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["username", "password"])
        for student in students:
            writer.writerow([student["username"], student["password"]])


def create(args: argparse.Namespace) -> int:
    try:
        students_csv = Path(args.students).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"--students {args.students!r} can't be read: {e}") from None
    passwords_out = Path(args.passwords_out) if args.passwords_out else None
    if passwords_out is not None and passwords_out.exists():
        raise CommandError(f"--passwords-out {str(passwords_out)!r} exists: nothing is overwritten")
    quota = parse_assignments(args.quota or [])
    body = {
        "name": args.name,
        "students_csv": students_csv,
        "instructors": _names(args.instructors, "--instructors"),
        "profiles": [p for text in args.profile for p in _names(text, "--profile")],
        "quota": quota,
        "course_dir": str(Path(args.course_dir).resolve()) if args.course_dir else None,
    }
    rows = sum(1 for line in students_csv.splitlines() if line.strip()) - 1
    print(f"creating workshop {args.name!r} ({rows} rows in {args.students}) ...", flush=True)
    status, answer = call_hub(hub_url(args) + API_PATH, body)
    if status != 201:
        raise fail_from(status, answer)
    students = answer["students"]
    print(
        f"workshop {answer['name']!r} created: {len(students)} students, instructors "
        f"{', '.join(answer['instructors'])}, profiles {', '.join(answer['profiles'])}"
    )
    if passwords_out is not None:
        write_passwords(passwords_out, students)
        print(f"one-time passwords written to {passwords_out} (mode 0600); hand them out")
    else:
        print("one-time passwords (shown once; students change theirs at /hub/change-password):")
        width = max(len(s["username"]) for s in students)
        for student in students:
            print(f"  {student['username']:<{width}}  {student['password']}")
    return 0


def close(args: argparse.Namespace) -> int:
    export_dir = str(Path(args.export).resolve()) if args.export else None
    print(
        f"closing workshop {args.name!r}: stopping its servers"
        + (f", archiving homes to {export_dir}" if export_dir else "")
        + " ...",
        flush=True,
    )
    url = f"{hub_url(args)}{API_PATH}/{args.name}/close"
    status, answer = call_hub(url, {"export_dir": export_dir})
    if status != 200:
        raise fail_from(status, answer)
    print(f"stopped {len(answer['stopped'])} servers: {', '.join(answer['stopped']) or '-'}")
    if export_dir:
        print(f"archived {len(answer['exported'])} homes into {export_dir}")
    print(f"disabled {len(answer['disabled'])} accounts: {', '.join(answer['disabled'])}")
    return 0


def _command(name, fn):
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CommandError as e:
            print(f"gpulab workshop {name}: {e}", file=sys.stderr)
            return e.status

    return handler


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "workshop",
        help="create and close workshops: student accounts, instructors, group policy",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    sub = commands.add_parser(
        "create",
        help="create a workshop: its group, student accounts, instructor role and policy",
        description="All or nothing: any bad row of the CSV (an invalid or duplicate name, "
        "a name that normalises to an existing user) is listed by line and nothing is "
        "created. Example: gpulab workshop create dl101 --students class.csv "
        "--instructors alice,bob --profile cpu,1-gpu --quota max_gpus=1 gpu_hours=4 window=1d",
    )
    sub.add_argument("name", help="the workshop: its group and the role instructor-NAME")
    sub.add_argument(
        "--students", required=True, metavar="CSV", help="a CSV with a 'username' column"
    )
    sub.add_argument("--instructors", required=True, metavar="A,B", help="existing users")
    sub.add_argument(
        "--profile",
        required=True,
        action="append",
        metavar="P[,P]",
        help="profiles students may spawn",
    )
    sub.add_argument("--quota", nargs="*", metavar="KEY=VALUE", help="max_gpus=1 gpu_hours=4 ...")
    sub.add_argument("--course-dir", metavar="PATH", help="notebooks copied into each home")
    sub.add_argument("--passwords-out", metavar="FILE", help="write the passwords here (0600)")
    sub.add_argument("--hub-url", help="the hub's public URL (default: the embedded default's)")
    sub.set_defaults(handler=_command("create", create))

    sub = commands.add_parser(
        "close",
        help="stop a workshop's servers, archive its homes, disable its accounts",
    )
    sub.add_argument("name")
    sub.add_argument("--export", metavar="DIR", help="archive each home to DIR/USER.tar.gz")
    sub.add_argument("--hub-url", help="the hub's public URL (default: the embedded default's)")
    sub.set_defaults(handler=_command("close", close))

    try:  # class-time GPU reservations, where that module is installed
        from gpulab.quota.reservations_cli import add_reserve_command
    except ImportError:
        pass
    else:
        add_reserve_command(commands)

    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
