"""A throwaway PostgreSQL server on a temporary folder, for the tests and ``bench/``.

    with PostgresServer() as pg:
        url = pg.create_database("t1")   # postgresql+psycopg://postgres@127.0.0.1:PORT/t1

It runs the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``,
the newest version; ``$GPULAB_PG_BIN`` overrides), listens on 127.0.0.1 only, on a free port,
with its unix socket inside the temporary folder. As root it runs them as the ``postgres``
OS user (``runuser -u postgres --``), because initdb refuses root.

It stops with ``stop()`` (``pg_ctl stop -m fast``) and, should the process that started it
die without stopping it (SIGKILL, OOM), a watchdog shell started beside it notices within a
second, stops the server (``-m immediate``) and removes the folder.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (the message says where we looked)."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and pg_ctl (or $GPULAB_PG_BIN)."""
    override = os.environ.get("GPULAB_PG_BIN")
    candidates = [override] if override else glob.glob("/usr/lib/postgresql/*/bin")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    for path in sorted(candidates, key=version, reverse=True):
        if all(os.access(Path(path, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(path)
    where = override or "/usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl) in {where}: "
        "install Debian's 'postgresql' package (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder. ``fsync=False`` is for tests (fast,
    not crash-safe for the server itself); benchmarks keep it on to compare fairly with a
    durable SQLite. ``timezone`` is the server's session default: deliberately not UTC, so
    code that leaks local time shows it."""

    def __init__(
        self,
        *,
        fsync: bool = False,
        max_connections: int = 300,
        timezone: str = "Asia/Kolkata",
    ):
        self.bin_dir = find_bin_dir()
        self.fsync = fsync
        self.max_connections = max_connections
        self.timezone = timezone
        self.folder: Path | None = None
        self.port: int | None = None
        self._watchdog: subprocess.Popen | None = None

    def _as_postgres(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = self._as_postgres([str(self.bin_dir / args[0]), *args[1:]])
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                + self.log_tail()
            )
        return result

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def log_tail(self, lines: int = 30) -> str:
        log = self.folder / "server.log" if self.folder else None
        if not log or not log.exists():
            return ""
        return "\nserver.log:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> PostgresServer:
        self.folder = Path(tempfile.mkdtemp(prefix="gpulab-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._start_watchdog()
        atexit.register(self.stop)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        for attempt in range(3):  # a free port can be taken between probing and binding
            self.port = _free_port()
            settings = {
                "max_connections": self.max_connections,
                "timezone": self.timezone,
                "fsync": "on" if self.fsync else "off",
                "synchronous_commit": "on" if self.fsync else "off",
                "full_page_writes": "on" if self.fsync else "off",
            }
            options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} " + " ".join(
                f"-c {key}={value}" for key, value in settings.items()
            )
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.folder / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                )
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def _start_watchdog(self) -> None:
        # Polls this process; once it is gone, stops the server and removes the folder.
        pg_ctl = " ".join(self._as_postgres([str(self.bin_dir / "pg_ctl")]))
        script = (
            'while kill -0 "$1" 2>/dev/null; do sleep 1; done; '
            f'{pg_ctl} stop -D "$2/data" -m immediate >/dev/null 2>&1; rm -rf "$2"'
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script, "gpulab-pg-watchdog", str(os.getpid()), str(self.folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survives a Ctrl-C to our process group
        )

    def stop(self) -> None:
        if self.folder is None:
            return
        folder, self.folder = self.folder, None
        if (folder / "data" / "postmaster.pid").exists():
            command = self._as_postgres(
                [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(folder / "data"), "-m", "fast"]
            )
            subprocess.run(command, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        shutil.rmtree(folder, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name must be a plain identifier, not {name!r}")
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
