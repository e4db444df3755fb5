"""A run's ``manifest.json``: what the run is, its status, restarts, error and checkpoints.

The manifest is small and rewritten whole, atomically (see ``Folder.write_atomic``), by
the process that drives the run: rank 0 or the launcher. On a local or mounted filesystem
each rewrite is a read-modify-write under the run folder's lock, so the launcher (recording
a restart) and rank 0 (recording a checkpoint) cannot lose each other's update; on object
stores there is no lock and the last writer wins, so keep updates to one process there.

Statuses: ``created`` (made but not started) -> ``running`` -> ``finished`` | ``failed``.
A restart keeps the run ``running`` and appends ``{at, reason, from_checkpoint_step}`` to
``restarts``; the records logged after it carry ``attempt = len(restarts)``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STATUSES = ("created", "running", "finished", "failed")
ENDED = ("finished", "failed")
MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
MAX_TRACEBACK_CHARS = 64 * 1024


def now_iso() -> str:
    """Now in UTC, ISO 8601 to the millisecond (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Manifest:
    id: str
    owner: str
    name: str
    created: str
    updated: str
    status: str = "created"
    config: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    devices: list[str] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    checkpoints: list[int] = field(default_factory=list)
    ended: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    @property
    def attempt(self) -> int:
        """0 for the first launch, n after the n-th restart."""
        return len(self.restarts)

    @property
    def ended_ok(self) -> bool:
        return self.status == "finished"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, allow_nan=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """A manifest from its JSON; unknown keys (a newer writer's) are ignored."""
        if not isinstance(data, dict):
            raise ValueError("a manifest is a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        if manifest.status not in STATUSES:
            raise ValueError(f"unknown status {manifest.status!r}")
        return manifest

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        return cls.from_json(json.loads(raw))
