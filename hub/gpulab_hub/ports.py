"""Port assignment for servers the hub starts on this machine.

JupyterHub's local spawner draws a random free port that the server binds only later.
Two spawns at once can draw the same port; the loser's server exits on the bind error,
and the hub, which only asks "does something answer HTTP there?", routes the loser's
URL to the winner's server. We close that race in two steps:

1. ``PortReservations`` hands out each port to one spawner at a time in this process,
   until that spawner's server has bound it (after which the kernel keeps it taken);
2. ``wait_for_listener`` confirms that the listening socket belongs to the process we
   started, so a port taken by anything else fails the attempt instead of being trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import psutil


class PortBindError(RuntimeError):
    """The server we started did not listen on its assigned port."""

    def __init__(self, message: str, *, exited: bool):
        super().__init__(message)
        self.exited = exited


def free_port(ip: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def remembered_port(path: Path, ip: str = "127.0.0.1", *, claim: bool = True) -> int:
    """A free port that stays the same across restarts while it stays free.

    The port is kept in ``path``. Servers started by a hub that was killed outlive it and
    still call the hub's API at the address they were given, so a restarted hub should
    listen there again; a port someone else took meanwhile is replaced by a new one.
    ``claim=False`` only reads the stored port (0 if none), for a process that reads the
    hub's config while the hub runs and holds that port.
    """
    if not claim:
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return 0
    try:
        port = int(path.read_text().strip())
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
        return port
    except (FileNotFoundError, ValueError, OSError):
        port = free_port(ip)
        path.write_text(f"{port}\n")
        return port


class PortReservations:
    """Ports handed out to servers that have not bound them yet, in this process."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def reserve(self, ip: str = "127.0.0.1", attempts: int = 100) -> int:
        with self._lock:
            for _ in range(attempts):
                port = free_port(ip)
                if port not in self._held:
                    self._held.add(port)
                    return port
        raise RuntimeError(f"no free port on {ip} after {attempts} attempts")

    def release(self, port: int) -> None:
        with self._lock:
            self._held.discard(port)

    @property
    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    @contextlib.contextmanager
    def reserved(self, ip: str = "127.0.0.1"):
        port = self.reserve(ip)
        try:
            yield port
        finally:
            self.release(port)


# One table for the whole hub process: every spawner draws from it.
hub_ports = PortReservations()


def listening_ports(pid: int) -> set[int]:
    """TCP ports on which process ``pid`` (or one of its children) listens."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    ports = set()
    for p in procs:
        try:
            for conn in p.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    ports.add(conn.laddr.port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ports


async def wait_for_listener(
    pid: int,
    port: int,
    *,
    timeout: float,
    is_running,
    ip: str = "127.0.0.1",
    interval: float = 0.1,
) -> None:
    """Return once process ``pid`` listens on ``port``; raise PortBindError otherwise.

    ``is_running()`` tells whether the process is still alive (a Popen's ``poll() is
    None``); a process that exits first failed to start, typically on a taken port.
    A connection attempt (cheap) tells when something listens; only then is the owner
    looked up (a scan of the process's sockets), so 20 servers starting at once don't
    spend the cores the servers need on scanning /proc.
    """
    deadline = time.monotonic() + timeout
    while True:
        # The owner's scan reads /proc/net/tcp, long with many servers: off the loop.
        if _accepts(ip, port) and port in await asyncio.to_thread(listening_ports, pid):
            return
        if not is_running():
            raise PortBindError(
                f"server process {pid} exited before listening on port {port}", exited=True
            )
        if time.monotonic() > deadline:
            raise PortBindError(
                f"server process {pid} did not listen on port {port} within {timeout:.0f}s",
                exited=False,
            )
        await asyncio.sleep(interval)


def _accepts(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0
