"""Who may view a run: its owner, users and groups it is shared with, and view-only links.

Stored as ``acl.json`` in the run's folder, next to the manifest, rewritten whole and
atomically under the run folder's lock (the same read-modify-write as the manifest's, so
two concurrent ``share_with`` calls can't lose each other's update on a local or mounted
filesystem; on object stores the last writer wins). A run without ``acl.json`` is private.

- ``owner`` is the run's owner (from the manifest); the ACL can never change it, and only
  the owner (``actor == owner``) may change the ACL: anyone else gets ``PermissionDenied``.
- ``users`` and ``groups`` are validated names (the owner rule of ``ids``: letters, digits
  and ``_ . @ + -``, not starting with ``.``), so no value can become a path or markup.
- ``links`` are view-only tokens with an expiry: ``{id, token_hash, created, expires,
  revoked}``. Only the SHA-256 of the token is stored (a token has 256 random bits, so a
  plain hash is as good as a keyed one); the token itself is returned once, by
  ``create_link``. A revoked link stops working at the next check: every check re-reads
  the file. Links exist only where the operator enables them: the caller passes that switch
  as ``allowed``.

A share grants read access to that one run and nothing else; ``can_view`` answers for one
run, and the store's ``viewable`` turns "no such run" and "not yours to see" into the same
``RunNotFound`` so a viewer can't probe which runs exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpulab.runs.errors import InvalidRunInput, PermissionDenied, RunError, RunNotFound
from gpulab.runs.ids import OWNER_PATTERN, check_owner
from gpulab.runs.manifest import now_iso

if TYPE_CHECKING:
    from gpulab.runs.folder import Folder
    from gpulab.runs.store import Run

ACL = "acl.json"
SCHEMA_VERSION = 1
MAX_LINK_SECONDS = 90 * 24 * 3600
MAX_SHARES = 1000
MAX_LINKS = 100
LINK_ID_PATTERN = re.compile(r"[0-9a-f]{12}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_user(user: Any) -> str:
    """A user name to share with: the same rule as a run's owner."""
    try:
        return check_owner(user)
    except InvalidRunInput:
        raise InvalidRunInput(
            "a user name is letters, digits and _ . @ + - (not starting with '.', at most"
            f" 128 characters), not {_shown(user)}", reason="users",
        ) from None


def check_group(group: Any) -> str:
    """A group name to share with: the same characters as a user name."""
    if not isinstance(group, str) or not OWNER_PATTERN.fullmatch(group):
        raise InvalidRunInput(
            "a group name is letters, digits and _ . @ + - (not starting with '.', at most"
            f" 128 characters), not {_shown(group)}", reason="groups",
        )
    return group


def _names(values: Any, check: Any, what: str) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidRunInput(f"{what} is a list of names, not {_shown(values)}", reason=what)
    return [check(value) for value in values]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _epoch(moment: float | datetime | None) -> float:
    if moment is None:
        return time.time()
    if isinstance(moment, datetime):
        return moment.timestamp()
    return float(moment)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@dataclass
class Acl:
    """A run's access list (see the module's docstring)."""

    owner: str
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    updated: str | None = None
    version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, allow_nan=False).encode() + b"\n"

    def public_json(self, now: float | datetime | None = None) -> dict[str, Any]:
        """For the owner's UI: the links without their hashes, each with ``active``."""
        data = self.to_json()
        data["links"] = [
            {**{k: v for k, v in link.items() if k != "token_hash"},
             "active": _live(link, _epoch(now))}
            for link in self.links
        ]
        return data

    @classmethod
    def from_bytes(cls, raw: bytes, owner: str) -> Acl:
        """The ACL in ``raw``; ``owner`` (the manifest's) wins over any stored one."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("an ACL is a JSON object")
        users, groups, links = data.get("users", []), data.get("groups", []), data.get("links", [])
        if not (isinstance(users, list) and isinstance(groups, list) and isinstance(links, list)
                and all(isinstance(link, dict) for link in links)):
            raise ValueError("an ACL's users, groups and links are lists")
        return cls(owner=owner, users=[str(u) for u in users], groups=[str(g) for g in groups],
                   links=links, updated=data.get("updated"))

    def grants(self, user: str | None = None, groups: Iterable[str] = (),
               token: str | None = None, now: float | datetime | None = None) -> bool:
        """Whether this ACL lets ``user`` (in ``groups``, or holding ``token``) view the run."""
        if user is not None and (user == self.owner or user in self.users):
            return True
        if set(groups) & set(self.groups):
            return True
        if token is None or not isinstance(token, str):
            return False
        wanted = hash_token(token)
        moment = _epoch(now)
        found = False
        for link in self.links:  # compare with every link, in constant time each
            if hmac.compare_digest(str(link.get("token_hash", "")), wanted) and _live(link,
                                                                                      moment):
                found = True
        return found


def _live(link: dict[str, Any], now: float) -> bool:
    if link.get("revoked"):
        return False
    try:
        return now < datetime.fromisoformat(link["expires"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return False


def read_acl(folder: Folder, owner: str, *, strict: bool = True) -> Acl:
    """The ACL in ``folder`` (an empty one if there is no ``acl.json``).

    An unreadable file raises ``RunError`` (status 500) with ``strict``, so a change never
    overwrites it; without, it reads as private (only the owner may view: fail closed).
    """
    try:
        return Acl.from_bytes(folder.read_bytes(ACL), owner)
    except FileNotFoundError:
        return Acl(owner=owner)
    except (ValueError, TypeError) as e:
        if not strict:
            return Acl(owner=owner)
        raise RunError(f"the ACL of run {owner}/{folder.name} is unreadable: {e}",
                       reason="acl", status_code=500) from None


def acl_of(run: Run) -> Acl:
    """``run``'s ACL as stored now (its owner from the manifest)."""
    return read_acl(run.folder, run.manifest().owner)


def _change(run: Run, actor: Any, change: Any) -> Acl:
    with run.folder.lock():
        owner = run.manifest().owner
        if not isinstance(actor, str) or actor != owner:
            raise PermissionDenied(
                f"only the owner of run {owner}/{run.id} may change who can view it",
                reason="acl",
            )
        acl = read_acl(run.folder, owner)
        change(acl)
        acl.updated = now_iso()
        run.folder.write_atomic(ACL, acl.to_bytes())
    return acl


def share_with(run: Run, users: Iterable[str] = (), groups: Iterable[str] = (), *,
               actor: str) -> Acl:
    """Let ``users`` and members of ``groups`` view ``run``; only its owner may."""
    users = _names(users, check_user, "users")
    groups = _names(groups, check_group, "groups")

    def change(acl: Acl) -> None:
        added_users = [u for u in users if u != acl.owner and u not in acl.users]
        added_groups = [g for g in groups if g not in acl.groups]
        if (len(set(acl.users + added_users)) > MAX_SHARES
                or len(set(acl.groups + added_groups)) > MAX_SHARES):
            raise InvalidRunInput(f"a run is shared with at most {MAX_SHARES} users and"
                                  f" {MAX_SHARES} groups", reason="acl")
        acl.users = sorted(set(acl.users + added_users))
        acl.groups = sorted(set(acl.groups + added_groups))

    return _change(run, actor, change)


def unshare(run: Run, users: Iterable[str] = (), groups: Iterable[str] = (), *,
            actor: str) -> Acl:
    """Stop sharing ``run`` with ``users`` and ``groups`` (names not listed are ignored)."""
    users = set(_names(users, check_user, "users"))
    groups = set(_names(groups, check_group, "groups"))

    def change(acl: Acl) -> None:
        acl.users = [u for u in acl.users if u not in users]
        acl.groups = [g for g in acl.groups if g not in groups]

    return _change(run, actor, change)


def create_link(run: Run, expires_in_seconds: float, *, actor: str, allowed: bool = True,
                now: float | datetime | None = None) -> tuple[str, str]:
    """A view-only link to ``run``: ``(link_id, token)``; the token is shown only now.

    ``allowed`` is the operator's switch (links off: ``PermissionDenied``); the expiry is
    1 second to ``MAX_LINK_SECONDS`` (90 days). Dead links (expired or revoked) are
    dropped from the file when a new one is made.
    """
    if not allowed:
        raise PermissionDenied("view-only links are turned off on this server", reason="links")
    if (isinstance(expires_in_seconds, bool)
            or not isinstance(expires_in_seconds, int | float)
            or not math.isfinite(expires_in_seconds)
            or not 0 < expires_in_seconds <= MAX_LINK_SECONDS):
        raise InvalidRunInput(
            f"a link expires in 1 second to {MAX_LINK_SECONDS} seconds (90 days), not"
            f" {_shown(expires_in_seconds)}", reason="expires_in_seconds",
        )
    moment = _epoch(now)
    token = secrets.token_urlsafe(32)
    link_id = secrets.token_hex(6)

    def change(acl: Acl) -> None:
        acl.links = [link for link in acl.links if _live(link, moment)]
        if len(acl.links) >= MAX_LINKS:
            raise InvalidRunInput(f"a run has at most {MAX_LINKS} live links; revoke one",
                                  reason="links")
        acl.links.append({
            "id": link_id, "token_hash": hash_token(token), "created": _iso(moment),
            "expires": _iso(moment + expires_in_seconds), "revoked": None,
        })

    _change(run, actor, change)
    return link_id, token


def revoke_link(run: Run, link_id: str, *, actor: str) -> Acl:
    """Revoke a link (at once: the next check fails); revoking twice is harmless."""
    if not isinstance(link_id, str) or not LINK_ID_PATTERN.fullmatch(link_id):
        raise InvalidRunInput(f"a link id is 12 hex digits, not {_shown(link_id)}",
                              reason="link")

    def change(acl: Acl) -> None:
        for link in acl.links:
            if link.get("id") == link_id:
                link["revoked"] = link.get("revoked") or now_iso()
                return
        raise RunNotFound(f"run {acl.owner}/{run.id} has no link {link_id}", reason="link")

    return _change(run, actor, change)


def can_view(subject: Run | Acl, user: str | None = None, groups: Iterable[str] = (),
             token: str | None = None, now: float | datetime | None = None) -> bool:
    """Whether ``user`` (member of ``groups``, or holding a link ``token``) may view a run.

    ``subject`` is the ``Run`` (its ACL is read now, so a revocation counts at once) or an
    ``Acl`` already read. An unreadable ACL lets only the owner in.
    """
    if isinstance(subject, Acl):
        acl = subject
    else:
        acl = read_acl(subject.folder, subject.manifest().owner, strict=False)
    if isinstance(groups, str):
        groups = (groups,)
    return acl.grants(user, groups, token, now)


def shared_runs(root: Folder, user: str, groups: Iterable[str] = ()) -> list[tuple[Folder, Acl]]:
    """Every other owner's run under ``root`` whose ACL lists ``user`` or one of ``groups``.

    A scan of every run's ``acl.json`` (fine for hundreds of users and thousands of runs;
    an index would be the next step). Links don't count: a link is not a listing.
    """
    user = check_user(user)
    groups = set(_names(groups, check_group, "groups"))
    found = []
    for owner in root.names():
        if owner == user or not OWNER_PATTERN.fullmatch(owner):
            continue
        owner_folder = root.child(owner)
        for run_id in owner_folder.names():
            folder = owner_folder.child(run_id)
            with contextlib.suppress(OSError):
                if not folder.exists(ACL):
                    continue
                acl = read_acl(folder, owner, strict=False)
                if user in acl.users or groups & set(acl.groups):
                    found.append((folder, acl))
    return found
