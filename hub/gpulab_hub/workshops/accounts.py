"""Create and close workshops inside the hub process, over the hub's own database session.

``create_workshop`` makes, all or nothing: a JupyterHub group NAME whose ``properties``
hold the workshop's settings (``{"gpulab_workshop": {"instructors": [...], "profiles":
[...], "course_dir": PATH or None}}``), one hub user per student (with the default
``user`` role) in that group, each with an approved NativeAuthenticator record holding a
generated one-time password (``first_password``: they are asked to change it at login),
and the role ``instructor-NAME`` given to the instructors.
Those rows are written in ONE commit of the hub's session: any failure rolls all of them
back. The group policy (profiles and quota) is an operator override in the quota ledger, a
separate database: it is written first and put back as it was if the hub's commit fails.

Everything is checked before anything is written: the settings (each error names its
field), the instructors (existing users), every roster row (``roster.parse_roster``).

``close_workshop`` stops the group's servers, optionally archives each student's home
folder, and disables the accounts: NativeAuthenticator's approval is withdrawn (their
password no longer logs in), their login cookies are invalidated and their API tokens
deleted; the instructor role is removed. The group, its members and the ledger's records
stay, for the usage reports.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tarfile
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
from jupyterhub import orm
from jupyterhub.metrics import TOTAL_USERS
from jupyterhub.utils import new_token
from nativeauthenticator.orm import UserInfo
from sqlalchemy.exc import SQLAlchemyError

from gpulab.quota.policy import Policy, PolicyError, PolicyLevel
from gpulab.quota.profiles import offered_profiles
from gpulab_hub.workshops import names
from gpulab_hub.workshops.first_password import record_first_passwords
from gpulab_hub.workshops.roles import instructor_role
from gpulab_hub.workshops.roster import RosterError, Student, parse_roster

PROPERTIES_KEY = "gpulab_workshop"
SPEC_KEYS = ("name", "students_csv", "instructors", "profiles", "quota", "course_dir")
# Letters and digits that can't be mistaken for one another when read off a sheet of paper.
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 14


class WorkshopError(Exception):
    """A request that can't be done as asked; nothing was changed. ``field`` names the
    culprit, ``rows`` lists bad roster rows ([{"line", "message"}]), ``status_code`` is the
    HTTP status the API answers with."""

    def __init__(
        self, message: str, *, field: str = "", status_code: int = 400, rows: list | None = None
    ):
        super().__init__(message)
        self.field = field
        self.status_code = status_code
        self.rows = rows or []

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status_code, "message": str(self)}
        if self.field:
            body["field"] = self.field
        if self.rows:
            body["rows"] = self.rows
        return body


@dataclass(frozen=True)
class WorkshopPlan:
    """A checked request: what ``commit_workshop`` will create."""

    name: str
    students: list[Student]
    instructors: list[str]
    profiles: list[str]
    policy: dict[str, Any]  # the group's override in the ledger: quota + profiles
    course_dir: str | None


def workshop_settings(group: orm.Group) -> dict[str, Any] | None:
    """The workshop settings kept in a group's properties; None for other groups."""
    settings = (group.properties or {}).get(PROPERTIES_KEY)
    return settings if isinstance(settings, dict) else None


def _string_list(body: Mapping, key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(
        isinstance(v, str) and v.strip() for v in value
    ):
        raise WorkshopError(f"{key} must be a non-empty list of names, not {value!r}", field=key)
    return [v.strip() for v in value]


def plan_workshop(db, authenticator, quota, body: Any) -> WorkshopPlan:
    """Check a create request (the API's JSON body) against the hub as it is now.

    Raises ``WorkshopError`` naming the field (or listing the bad roster rows); reads only.
    """
    if not isinstance(body, Mapping):
        raise WorkshopError("the request must be a JSON object")
    unknown = sorted(set(body) - set(SPEC_KEYS))
    if unknown:
        raise WorkshopError(
            f"unknown fields {unknown}; accepted: {', '.join(SPEC_KEYS)}", field=unknown[0]
        )
    try:
        name = names.check_workshop_name(body.get("name"))
    except ValueError as e:
        raise WorkshopError(str(e), field="name") from None
    if orm.Group.find(db, name) is not None:
        raise WorkshopError(f"a group named {name!r} exists already", field="name", status_code=409)
    if orm.Role.find(db, names.instructor_role_name(name)) is not None:
        raise WorkshopError(
            f"a role named {names.instructor_role_name(name)!r} exists already",
            field="name",
            status_code=409,
        )

    profiles = _string_list(body, "profiles")
    offered = [
        p.name
        for p in offered_profiles(Policy(), len(quota.whole_gpus()), quota.mig_slices())
    ]
    missing = [p for p in profiles if p not in offered]
    if missing:
        raise WorkshopError(
            f"profiles {missing} are not offered on this hub; offered: {offered}",
            field="profiles",
        )
    limits = body.get("quota") or {}
    if not isinstance(limits, Mapping):
        raise WorkshopError(f"quota must be an object of limits, not {limits!r}", field="quota")
    if "profiles" in limits:
        raise WorkshopError("give the profiles as profiles, not in quota", field="quota")
    policy = {**limits, "profiles": profiles}
    try:
        PolicyLevel(policy, setting="quota")
    except PolicyError as e:
        raise WorkshopError(str(e), field=e.setting) from None

    course_dir = body.get("course_dir")
    if course_dir is not None:
        if not isinstance(course_dir, str) or not os.path.isabs(course_dir):
            raise WorkshopError(
                f"course_dir must be an absolute path or null, not {course_dir!r}",
                field="course_dir",
            )
        if not os.path.isdir(course_dir):
            raise WorkshopError(
                f"course_dir {course_dir!r} is not a folder on the hub's machine",
                field="course_dir",
            )

    instructors = []
    for given in _string_list(body, "instructors"):
        try:
            instructor = authenticator.normalize_username(given)
        except ValueError:
            instructor = None
        if instructor is None or orm.User.find(db, instructor) is None:
            raise WorkshopError(
                f"instructor {given!r} is not a user of this hub; create their account first",
                field="instructors",
            )
        if instructor not in instructors:
            instructors.append(instructor)

    taken = {u.name for u in db.query(orm.User.name)}
    taken |= {u.username for u in db.query(UserInfo.username)}

    def normalize(given: str) -> str:
        name = authenticator.normalize_username(names.normalize_username(given))
        if not authenticator.validate_username(name):
            raise ValueError(f"{given!r} is not a valid username on this hub")
        return name

    csv_text = body.get("students_csv")
    if not isinstance(csv_text, str):
        raise WorkshopError("students_csv must be the text of a CSV file", field="students_csv")
    try:
        students = parse_roster(csv_text, normalize, taken)
    except RosterError as e:
        raise WorkshopError(str(e), field="students_csv", rows=e.to_json()) from None
    return WorkshopPlan(name, students, instructors, profiles, policy, course_dir)


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


async def hash_passwords(passwords: list[str]) -> list[bytes]:
    """bcrypt hashes, computed off the hub's event loop (~0.2 s each)."""

    def hash_one(password: str) -> bytes:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt())

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, hash_one, p) for p in passwords))
        )


def commit_workshop(db, quota, plan: WorkshopPlan, hashes: list[bytes], actor: str) -> None:
    """Write the workshop: the ledger's group policy, then the hub's rows in one commit.

    A failure of the hub's commit rolls its rows back and puts the group's ledger override
    back as it was; raises ``WorkshopError`` (409 where a name was taken meanwhile)."""
    previous = quota.ledger.policy_overrides()["groups"].get(plan.name, {})
    quota.set_policy("group", plan.name, plan.policy, actor=actor)
    try:
        group = orm.Group(
            name=plan.name,
            properties={
                PROPERTIES_KEY: {
                    "instructors": plan.instructors,
                    "profiles": plan.profiles,
                    "course_dir": plan.course_dir,
                    "created_by": actor,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            },
        )
        db.add(group)
        user_role = orm.Role.find(db, "user")
        for student, password_hash in zip(plan.students, hashes, strict=True):
            user = orm.User(name=student.username)
            db.add(user)
            if user_role is not None:
                user.roles.append(user_role)
            group.users.append(user)
            db.add(UserInfo(username=student.username, password=password_hash, is_authorized=True))
        record_first_passwords(
            db, {s.username: h for s, h in zip(plan.students, hashes, strict=True)}
        )
        spec = instructor_role(plan.name)
        role = orm.Role(name=spec["name"], description=spec["description"], scopes=spec["scopes"])
        db.add(role)
        for instructor in plan.instructors:
            role.users.append(orm.User.find(db, instructor))
        db.commit()
    except BaseException as e:
        db.rollback()
        quota.set_policy("group", plan.name, previous, actor=f"{actor} (rollback)")
        if isinstance(e, SQLAlchemyError):
            raise WorkshopError(
                f"workshop {plan.name!r} could not be created ({type(e).__name__}); a name "
                "may have been taken meanwhile: nothing was created, try again",
                status_code=409,
            ) from e
        raise


async def create_workshop(db, authenticator, quota, body: Any, actor: str) -> dict[str, Any]:
    """Check, then create a workshop; returns the students' one-time passwords (shown once:
    only their hashes are kept)."""
    plan = plan_workshop(db, authenticator, quota, body)
    passwords = [new_password() for _ in plan.students]
    hashes = await hash_passwords(passwords)
    # Another request may have run while the hashes were computed: check again.
    plan = plan_workshop(db, authenticator, quota, body)
    commit_workshop(db, quota, plan, hashes, actor)
    TOTAL_USERS.inc(len(plan.students))  # the hub's own metric, as its user API counts
    return {
        "name": plan.name,
        "instructors": plan.instructors,
        "profiles": plan.profiles,
        "course_dir": plan.course_dir,
        "policy": quota.policy_view("group", plan.name)["effective"],
        "students": [
            {"line": s.line, "username": s.username, "password": p}
            for s, p in zip(plan.students, passwords, strict=True)
        ],
    }


def find_workshop(db, name: str) -> tuple[orm.Group, dict[str, Any]]:
    group = orm.Group.find(db, name) if isinstance(name, str) else None
    settings = workshop_settings(group) if group is not None else None
    if settings is None:
        raise WorkshopError(f"no workshop named {name!r}", field="name", status_code=404)
    return group, settings


def _check_export_dir(export_dir: Any, usernames: list[str]) -> Path | None:
    if export_dir is None:
        return None
    if not isinstance(export_dir, str) or not os.path.isabs(export_dir):
        raise WorkshopError(
            f"export_dir must be an absolute path or null, not {export_dir!r}", field="export_dir"
        )
    path = Path(export_dir)
    if path.exists() and not path.is_dir():
        raise WorkshopError(f"export_dir {export_dir!r} is not a folder", field="export_dir")
    existing = [n for n in usernames if (path / f"{n}.tar.gz").exists()]
    if existing:
        raise WorkshopError(
            f"export_dir {export_dir!r} already holds archives of {existing}: choose an empty "
            "folder (nothing is overwritten)",
            field="export_dir",
        )
    return path


def export_home(home: Path, archive: Path) -> None:
    """``home`` as a gzipped tar at ``archive`` (mode 0600: it is the student's work)."""
    partial = archive.with_name(archive.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(home, arcname=home.name)
    partial.replace(archive)


StopServer = Callable[[Any, str], Awaitable[None]]


async def close_workshop(
    db, users, stop_server: StopServer, name: str, export_dir: Any = None, *, actor: str
) -> dict[str, Any]:
    """Stop the group's servers, archive homes (``export_dir``), disable the accounts.

    ``users`` is the hub's user cache (``handler.users``, orm user -> User) and
    ``stop_server(user, server_name)`` the hub's ``stop_single_user``."""
    group, settings = find_workshop(db, name)
    members = list(group.users)
    archive_dir = _check_export_dir(export_dir, [u.name for u in members])

    stopped = []

    async def stop_all(user):
        for server_name, spawner in list(user.spawners.items()):
            for _ in range(600):  # a server still starting or stopping: wait (max 60 s)
                if not spawner.pending:
                    break
                await asyncio.sleep(0.1)
            if spawner.active:
                await stop_server(user, server_name)
                stopped.append(f"{user.name}/{server_name}" if server_name else user.name)

    await asyncio.gather(*(stop_all(users[m]) for m in members))

    exported = []
    if archive_dir is not None:
        archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for member in members:
            spawner = users[member].spawner
            home = Path(getattr(spawner, "home_dir", "") or "")
            if home.name and home.is_dir():
                archive = archive_dir / f"{member.name}.tar.gz"
                await asyncio.to_thread(export_home, home, archive)
                exported.append(str(archive))

    try:
        for member in members:
            info = UserInfo.find(db, member.name)
            if info is not None:
                info.is_authorized = False
            member.cookie_id = new_token()  # every login cookie of theirs stops working
            for token in list(member.api_tokens):
                db.delete(token)
        role = orm.Role.find(db, names.instructor_role_name(name))
        if role is not None:
            db.delete(role)
        group.properties = {
            **group.properties,
            PROPERTIES_KEY: {
                **settings,
                "closed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "closed_by": actor,
            },
        }
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return {
        "name": name,
        "stopped": sorted(stopped),
        "exported": exported,
        "disabled": sorted(m.name for m in members),
    }
