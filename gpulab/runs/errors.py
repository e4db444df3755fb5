"""The run store's exceptions: one base type for expected, user-facing failures.

Each carries a keyword-only ``reason`` (the field or rule that failed, for an API's JSON
body) and a ``status_code`` an HTTP adapter can map it to. Anything else (a disk error,
a permission problem) is not caught here and surfaces as itself.
"""

from __future__ import annotations

from typing import Any


class RunError(Exception):
    """An expected failure of a run store call; nothing was written."""

    status_code = 400

    def __init__(self, message: str, *, reason: str | None = None,
                 status_code: int | None = None):
        super().__init__(message)
        self.reason = reason
        if status_code is not None:
            self.status_code = status_code

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "reason": self.reason}


class InvalidRunInput(RunError, ValueError):
    """A bad id, owner, name, config value, step or artifact name (``reason`` names which)."""

    status_code = 400


class RunNotFound(RunError, LookupError):
    """No such run (or no manifest in its folder yet)."""

    status_code = 404


class RunStateError(RunError):
    """A status change the run's current status does not allow (finishing a failed run)."""

    status_code = 409


class PermissionDenied(RunError):
    """The caller may not do this to the run (only its owner may change who can see it).

    Not an ``OSError``/``PermissionError``: code that tolerates disk errors must not
    swallow a refusal.
    """

    status_code = 403
