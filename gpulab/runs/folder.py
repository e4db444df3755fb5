"""A folder on any fsspec filesystem, with a fast and durable path for local disks.

The run store addresses everything through fsspec URLs (``file:///...``, a plain path,
``memory://`` in tests, an object store at scale). On the local filesystem (which
includes NFS and other mounted shared volumes) it bypasses fsspec for the operations
whose durability matters:

- ``write_atomic`` writes a temp file in the same folder (``O_EXCL``, mode per umask),
  fsyncs it, ``os.replace``-s it over the final name and fsyncs the folder: a reader sees
  the old file or the new one, never half of one, even after a crash or power loss;
- ``lock`` is an ``fcntl.flock`` on a hidden lock file (NFS v4 maps it to a lease lock).

On any other fsspec filesystem ``write_atomic`` writes the temp name and then ``mv``-s it
over the final name. Object stores implement that move as copy-then-delete, and an object
appears whole or not at all, so readers still never see a half-written file; there is no
fsync and no lock there (concurrent read-modify-write of one file is last-writer-wins).
Temp files are hidden (``.NAME.RANDOM.tmp``) so no listing mistakes one for data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import secrets
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

Writer = Callable[[IO[bytes]], Any]
TEMP_SUFFIX = ".tmp"


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def fsync_folder(path: str) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where folders can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fill(f: IO[bytes], data: bytes | None, writer: Writer | None) -> None:
    if writer is not None:
        writer(f)
    else:
        f.write(data)


class Folder:
    """``path`` on ``fs``; ``local`` when it is the machine's own filesystem."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self.fs = fs
        self.path = path.rstrip("/") or "/"
        self.local = isinstance(fs, LocalFileSystem)

    @classmethod
    def from_url(cls, url: str | os.PathLike, storage_options: dict | None = None) -> Folder:
        url = os.fspath(url)
        if "://" not in url:
            url = os.path.abspath(os.path.expanduser(url))
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return cls(fs, path)

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Folder) and (self.fs, self.path) == (other.fs, other.path)

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def url(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> Folder:
        return Folder(self.fs, posixpath.dirname(self.path))

    def child(self, name: str) -> Folder:
        return Folder(self.fs, posixpath.join(self.path, name))

    def file(self, name: str) -> str:
        return posixpath.join(self.path, name)

    # -- folders ------------------------------------------------------------------------

    def makedirs(self) -> None:
        if self.local:
            os.makedirs(self.path, exist_ok=True)
        else:
            self.fs.makedirs(self.path, exist_ok=True)

    def create_exclusive(self) -> None:
        """Create this folder, raising ``FileExistsError`` if it is there already."""
        if self.local:
            os.makedirs(posixpath.dirname(self.path), exist_ok=True)
            os.mkdir(self.path)
            fsync_folder(posixpath.dirname(self.path))
            return
        if self.fs.exists(self.path):
            raise FileExistsError(self.url)
        self.fs.makedirs(self.path, exist_ok=True)

    def names(self) -> list[str]:
        """The names in this folder (files and folders), sorted; [] if it does not exist."""
        if self.local:
            try:
                return sorted(os.listdir(self.path))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(self.path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = {posixpath.basename(e.rstrip("/")) for e in entries}
        found.discard("")
        return sorted(found)

    # -- files --------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        if self.local:
            return os.path.exists(self.file(name))
        return self.fs.exists(self.file(name))

    def size(self, name: str) -> int:
        """The file's size in bytes (``FileNotFoundError`` if missing)."""
        if self.local:
            return os.stat(self.file(name)).st_size
        return int(self.fs.size(self.file(name)))

    def mtime(self, name: str) -> float | None:
        """Last modification (epoch seconds), where the filesystem says."""
        if self.local:
            return os.stat(self.file(name)).st_mtime
        info = self.fs.info(self.file(name))
        for key in ("mtime", "LastModified", "updated", "created"):
            value = info.get(key)
            if isinstance(value, int | float):
                return float(value)
            if hasattr(value, "timestamp"):
                return value.timestamp()
        return None

    def read_bytes(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        path = self.file(name)
        if self.local:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read() if end is None else f.read(max(0, end - start))
        return self.fs.cat_file(path, start=start or None, end=end)

    def open_read(self, name: str) -> IO[bytes]:
        if self.local:
            return open(self.file(name), "rb")
        return self.fs.open(self.file(name), "rb")

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.unlink(self.file(name))
            else:
                self.fs.rm_file(self.file(name))

    def write_atomic(self, name: str, data: bytes | None = None, *,
                     writer: Writer | None = None) -> None:
        """Replace ``name`` with ``data`` (or what ``writer(file)`` writes) atomically.

        ``writer`` gets a binary file open for writing and must not close it. If it raises,
        or the process dies, the old file (if any) is untouched; a killed process leaves at
        most a hidden temp file behind (see ``remove_stale_temps``).
        """
        if (data is None) == (writer is None):
            raise TypeError("write_atomic takes data or writer, not both or neither")
        temp_name = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        temp, final = self.file(temp_name), self.file(name)
        if self.local:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                with os.fdopen(fd, "wb") as f:
                    _fill(f, data, writer)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            fsync_folder(self.path)
            return
        try:
            with self.fs.open(temp, "wb") as f:
                _fill(f, data, writer)
            self.fs.mv(temp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(temp)
            raise

    def remove_stale_temps(self, older_than: float) -> list[str]:
        """Remove temp files left by killed writers: not modified for ``older_than`` seconds.

        A live writer keeps touching its temp file, so only abandoned ones are this old.
        """
        removed = []
        now = time.time()
        for name in self.names():
            if not is_temp(name):
                continue
            with contextlib.suppress(OSError):
                mtime = self.mtime(name)
                if mtime is not None and now - mtime > older_than:
                    self.remove(name)
                    removed.append(name)
        return removed

    @contextlib.contextmanager
    def lock(self, name: str = ".lock") -> Iterator[None]:
        """An exclusive lock across processes on a local or mounted filesystem; none elsewhere."""
        if not self.local:
            yield
            return
        with open(self.file(name), "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
