"""Secrets the hub keeps in its state folder (the admin's first password, the proxy token).

Each secret is a file of mode 0600, created atomically with O_EXCL so that two processes
starting at once can't both create (and print) one; once written it is only read.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def read_or_create_secret(path: Path, nbytes: int = 18) -> tuple[str, bool]:
    """Return ``(secret, created)``: the secret stored at ``path``, making one if missing.

    ``created`` is True only for the call that wrote the file, so a caller can show a new
    password once and never again.
    """
    try:
        return _read(path), False
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(nbytes)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    tmp = Path(tmp_name)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        # link() fails if another process created the secret in the meantime: theirs wins.
        os.link(tmp, path)
    except FileExistsError:
        return _read(path), False
    finally:
        tmp.unlink()
    return value, True


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"the secret file {path} is empty: delete it to make a new secret")
    return value
