"""Where a server's clusters are written down, so every process of that server sees them.

A cluster lives in the process that started it (the Jupyter server for the sidebar's
clusters, a kernel for ``clusters.start()`` in a notebook). Each one keeps a record in
this server's registry folder: one JSON file per cluster, rewritten atomically by its owner
as workers come and go. The sidebar lists the folder, a notebook connects to a record, and
a record whose owner process is gone is stale and removed by whoever notices.

The folder is private (0700, files 0600): a record holds the cluster's TLS credentials,
which are what lets a process connect to its scheduler.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ID_PATTERN = re.compile(r"^[a-z0-9]{12}$")


class ClusterNotFound(LookupError):
    status = 404

    def __init__(self, cluster_id: str, message: str | None = None):
        super().__init__(message or f"no cluster {cluster_id!r} on this server")
        self.cluster_id = cluster_id


def default_folder() -> Path:
    """``$GPULAB_CLUSTERS_DIR``, else a folder per Jupyter server under the user's data dir.

    Named servers of one user share a home, so the server's name is part of the path.
    """
    explicit = os.environ.get("GPULAB_CLUSTERS_DIR")
    if explicit:
        return Path(explicit)
    server = os.environ.get("JUPYTERHUB_SERVER_NAME") or "default"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(data) / "gpulab" / "clusters" / _safe(server)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "default"


def new_id() -> str:
    return secrets.token_hex(6)


def check_id(cluster_id: Any) -> str:
    if not isinstance(cluster_id, str) or not ID_PATTERN.match(cluster_id):
        raise ClusterNotFound(str(cluster_id)[:40])
    return cluster_id


def owner_identity(pid: int | None = None) -> dict[str, Any]:
    """This process as a record's owner: pid plus start time, so a reused pid is no match."""
    process = psutil.Process(pid)
    return {"pid": process.pid, "started": process.create_time()}


def owner_alive(owner: dict[str, Any]) -> bool:
    try:
        process = psutil.Process(int(owner["pid"]))
        return abs(process.create_time() - float(owner["started"])) < 0.01 and (
            process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


class Registry:
    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()

    def __repr__(self) -> str:
        return f"Registry({str(self.folder)!r})"

    def _ensure(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        return self.folder

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises choosing devices and admitting clusters across this server's processes."""
        with open(self._ensure() / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def path(self, cluster_id: str) -> Path:
        return self.folder / f"{check_id(cluster_id)}.json"

    def write(self, record: dict[str, Any]) -> None:
        """Replace a record atomically: readers see the old or the new file, never half."""
        folder = self._ensure()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(record["id"]))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def read(self, cluster_id: str) -> dict[str, Any]:
        try:
            return json.loads(self.path(cluster_id).read_text())
        except (FileNotFoundError, ValueError):
            raise ClusterNotFound(cluster_id) from None

    def remove(self, cluster_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(cluster_id).unlink()

    def records(self) -> list[dict[str, Any]]:
        """Every record, oldest first (live or stale: see ``live``)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now, or not ours
            if isinstance(record, dict) and record.get("id") == path.stem:
                found.append(record)
        return sorted(found, key=lambda r: (r.get("created", ""), r["id"]))

    def live(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(records whose owner runs, stale records whose owner is gone)."""
        live, stale = [], []
        for record in self.records():
            (live if owner_alive(record.get("owner", {})) else stale).append(record)
        return live, stale
