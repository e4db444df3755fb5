"""Settings of the embedded default, read from the environment.

The embedded default (one machine, no external services) is configured by a handful of
environment variables so that ``make run`` needs no config file edits:

- ``GPULAB_STATE_DIR`` (default ``./var``): the hub's SQLite database, cookie secret,
  proxy token, the admin's first password, users' homes and logs;
- ``GPULAB_IP`` (default ``127.0.0.1``) and ``GPULAB_PORT`` (default ``8000``): where the
  public proxy listens;
- ``GPULAB_ADMIN`` (default ``admin``): the name of the operator account created on
  first start.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# JupyterHub usernames end up in URLs (/user/<name>/) and in folder names.
_ADMIN_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


class SettingsError(ValueError):
    """A setting of the embedded default has a bad value; the message names it."""


@dataclass(frozen=True)
class EmbeddedSettings:
    state_dir: Path
    ip: str
    port: int
    admin: str

    @property
    def public_url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"

    @property
    def home_root(self) -> Path:
        return self.state_dir / "home"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def admin_password_file(self) -> Path:
        return self.state_dir / "admin-password"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None):
        """Read and validate the settings; raise SettingsError naming the bad variable."""
        environ = os.environ if environ is None else environ
        cwd = Path.cwd() if cwd is None else cwd

        state_dir = Path(environ.get("GPULAB_STATE_DIR") or "var")
        if not state_dir.is_absolute():
            state_dir = cwd / state_dir
        if state_dir.exists() and not state_dir.is_dir():
            raise SettingsError(
                f"GPULAB_STATE_DIR must be a folder, not the file {str(state_dir)!r}"
            )

        ip = environ.get("GPULAB_IP") or "127.0.0.1"
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SettingsError(
                f"GPULAB_IP must be an IP address such as 127.0.0.1, not {ip!r}"
            ) from None

        raw_port = environ.get("GPULAB_PORT") or "8000"
        try:
            port = int(raw_port)
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            raise SettingsError(
                f"GPULAB_PORT must be a port number from 1 to 65535, not {raw_port!r}"
            )

        admin = environ.get("GPULAB_ADMIN") or "admin"
        if not _ADMIN_NAME.match(admin):
            raise SettingsError(
                "GPULAB_ADMIN must be a lower-case name of letters, digits, '.', '_' or '-' "
                f"starting with a letter (at most 32 characters), not {admin!r}"
            )
        return cls(state_dir=state_dir.resolve(), ip=ip, port=port, admin=admin)

    def make_dirs(self) -> None:
        """Create the state folder and its sub-folders, private to this account."""
        for folder in (self.state_dir, self.home_root, self.log_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
