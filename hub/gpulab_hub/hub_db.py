"""The hub's own SQLite database, in WAL mode.

JupyterHub commits on its event loop, many times per login, spawn and stop, and SQLite's
default rollback journal syncs the disk twice a commit. With dozens of servers starting
at once those syncs were the largest part of the hub's busy time in a profile of
``bench.hub_load`` (46 of 130 busy seconds), during which the hub answers no one and its
calls to the proxy time out. In WAL mode with ``synchronous=NORMAL`` a commit is a write
to the log, synced at checkpoints: still atomic, and still durable when the hub is
killed (the tests SIGKILL it); only an operating-system crash or power loss can lose the
last commits, and those end every server anyway. The quota ledger is not this database:
it keeps full syncs (``gpulab.quota.ledger``).

WAL needs the database on a local disk (not NFS), which the state folder is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def sqlite_wal_kwargs(path: Path) -> dict:
    """``c.JupyterHub.db_kwargs`` for a hub database at ``path`` (SQLAlchemy's
    ``create_engine`` arguments): each connection opens in WAL mode."""

    def connect() -> sqlite3.Connection:
        # What JupyterHub asks of its SQLite connections (check_same_thread) plus the mode.
        connection = sqlite3.connect(str(path), check_same_thread=False)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        return connection

    return {"creator": connect}
