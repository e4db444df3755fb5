"""Metrics: append-only JSON lines, one file per rank (``metrics/rank-<r>.jsonl``).

Each record is one line ``{"step": int, "time": float, "rank": int, "attempt": int, ...}``
(``time`` is epoch seconds, ``attempt`` is 0 before the first restart and n after the
n-th). NaN and infinity are allowed as metric values (a diverging loss is worth seeing)
and are written as Python's ``json`` writes them.

Why one file per rank: each file has exactly one writer, so appends need no lock and no
reliance on ``O_APPEND`` atomicity, which local disks give but NFS across hosts (the
shared volume a multi-node job logs to) does not; and a rank killed mid-record tears only
its own file. The price is a reader that merges a few files, and a cursor that is a byte
offset per rank (``{"0": 4096, "1": 2048}``, JSON-able for a dashboard's live tail).

Crash safety, local filesystem (including mounted shared volumes):

- a record is encoded first and written with one ``os.write`` of the whole line on an
  ``O_APPEND`` descriptor (no user-space buffer), so a writer killed by SIGKILL loses at
  most the record being written, and a half-written one is at the end of its file;
- ``fdatasync`` every ``sync_interval`` seconds (default 2 s) and on close, not per
  record: SIGKILL loses nothing that ``write`` returned (it is in the page cache), only a
  power loss can cost the last interval, and logging every step stays a few microseconds;
- a writer that opens a file whose last byte is not a newline (a predecessor died
  mid-record) first writes a newline, so its own records start on a fresh line;
- the reader only consumes complete lines (ending in a newline): the offset it returns
  never points inside a record, a torn tail is left for later, and a complete line that
  is not a valid record (a torn fragment, garbage) is skipped; a line where a record was
  appended to a fragment without that newline is recovered from its last ``{"step":``.

Each writer also saves the lines it appends, every 8 MiB and at close, as column files
(``gpulab.runs.column_files``): a dashboard opening a long run loads those instead of
parsing the JSON lines. They are copies, checked against the lines before use.

On other fsspec filesystems (object stores, memory://) a writer buffers records and
appends them at most every ``sync_interval`` seconds and on ``flush``/``close``, one
``open("ab")`` per batch; a killed writer loses at most the unflushed batch. Stores
without append (S3, GCS) rewrite the object on each batch: fine for a short run's
metrics, but point ``GPULAB_RUNS_DIR`` at a shared volume for long ones.
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import json
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gpulab.runs.errors import InvalidRunInput
from gpulab.runs.folder import Folder
from gpulab.runs.ids import check_count

if TYPE_CHECKING:
    from gpulab.runs.column_files import SpanWriter

RESERVED = frozenset({"step", "time", "rank", "attempt"})
FILE_PATTERN = re.compile(r"rank-([0-9]{1,6})\.jsonl")
DEFAULT_SYNC_INTERVAL = 2.0
MAX_RECORD_BYTES = 1 << 20
READ_CHUNK = 4 << 20
MAX_LINE_BYTES = 64 << 20  # longer lines are garbage, skipped
RECORD_START = b'{"step":'
MAX_RANK = 999_999
COLUMN_SPAN_BYTES = 8 << 20  # see gpulab.runs.column_files
FINAL_SPAN_BYTES = 1 << 20  # a shorter remainder at close parses from JSON quickly enough

Cursor = dict[str, int]


def metrics_file(rank: int) -> str:
    return f"rank-{rank}.jsonl"


def _plain(value: Any) -> Any:
    """JSON for numpy scalars, 0-d arrays and one-element torch tensors (via ``.item()``)."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            result = item()
        except (ValueError, RuntimeError, TypeError) as e:
            raise TypeError(f"{type(value).__name__} with more than one value: {e}") from None
        if result is not value:
            return result
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_plain)
_encode = _ENCODER.encode


class MetricsWriter:
    """Appends one rank's records to ``metrics/rank-<rank>.jsonl`` of a run.

    Use one writer per rank per process (``Run.metrics_writer(rank)`` caches it). ``log``
    is safe to call from several threads. Close it (or use it as a context manager) to
    make the last records durable; a process that exits without closing loses nothing
    but what a power cut would take.

    Every ``column_span_bytes`` of its lines, and the rest at close (from 1 MiB), it also
    saves as a column file for dashboards (``gpulab.runs.column_files``); None: none.
    """

    def __init__(self, folder: Folder, rank: int = 0, *, attempt: int = 0,
                 sync_interval: float | None = DEFAULT_SYNC_INTERVAL,
                 max_record_bytes: int = MAX_RECORD_BYTES,
                 column_span_bytes: int | None = COLUMN_SPAN_BYTES):
        self.folder = folder
        self.rank = check_count(rank, "rank", maximum=MAX_RANK)
        self.attempt = check_count(attempt, "attempt")
        if sync_interval is not None and not sync_interval >= 0:
            raise InvalidRunInput(
                f"sync_interval is seconds >= 0 or None, not {sync_interval!r}",
                reason="sync_interval",
            )
        self.sync_interval = sync_interval
        self.max_record_bytes = check_count(max_record_bytes, "max_record_bytes", minimum=64)
        self.name = metrics_file(self.rank)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._buffer: list[bytes] = []
        self._needs_repair = True
        self._closed = False
        self._last_sync = time.monotonic()
        if column_span_bytes is not None:
            column_span_bytes = check_count(column_span_bytes, "column_span_bytes", minimum=1)
        self.column_span_bytes = column_span_bytes
        self._spans: SpanWriter | None = None
        folder.makedirs()
        if folder.local:
            self._fd = self._open_local()
            self._spans = self._span_writer(os.fstat(self._fd).st_size)
        else:
            _flush_at_exit(self)

    def __repr__(self) -> str:
        return f"MetricsWriter({self.folder.file(self.name)!r}, rank={self.rank})"

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.folder.fs.unstrip_protocol(self.folder.file(self.name))

    def _open_local(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.folder.file(self.name), flags, 0o666)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _write_all(fd, b"\n")  # end the record a killed predecessor tore
        self._needs_repair = False
        return fd

    def _span_writer(self, start: int) -> SpanWriter | None:
        """Column files of this writer's lines from offset ``start`` (where its own lines
        begin), unless switched off or its records could be longer than a reader parses."""
        if self.column_span_bytes is None or self.max_record_bytes > MAX_LINE_BYTES:
            return None
        from gpulab.runs.column_files import SpanWriter

        return SpanWriter(self.folder, self.rank, start, self.column_span_bytes)

    def encode(self, step: int, metrics: Mapping[str, Any]) -> bytes:
        """One record as the line ``log`` appends (checked: step, names, values, size)."""
        if type(step) is not int or step < 0:
            step = check_count(step, "step")
        record: dict[str, Any] = {"step": step, "time": time.time(), "rank": self.rank,
                                  "attempt": self.attempt}
        if not RESERVED.isdisjoint(metrics):
            raise InvalidRunInput(
                f"{sorted(RESERVED.intersection(metrics))} can't be metric names: step, time,"
                " rank and attempt are the record's own fields", reason="metrics")
        record.update(metrics)
        try:
            line = _encode(record)
        except (TypeError, ValueError):
            raise InvalidRunInput(_explain(metrics), reason="metrics") from None
        data = (line + "\n").encode()
        if len(data) > self.max_record_bytes:
            raise InvalidRunInput(
                f"a metrics record is at most {self.max_record_bytes} bytes, not {len(data)}",
                reason="metrics",
            )
        return data

    def log(self, step: int, **metrics: Any) -> None:
        """Append ``{"step": step, "time": now, "rank": ..., **metrics}`` as one line."""
        data = self.encode(step, metrics)
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        if self._fd is not None:
            if self._spans is None:
                _write_all(self._fd, data)
            else:
                with self._lock:  # the column files' offsets follow the file's order
                    _write_all(self._fd, data)
                    self._spans.add(data)
            if self.sync_interval is not None:
                now = time.monotonic()
                if now - self._last_sync >= self.sync_interval:
                    self._last_sync = now
                    _datasync(self._fd)
            return
        with self._lock:
            self._buffer.append(data)
            now = time.monotonic()
            if self.sync_interval is not None and now - self._last_sync >= self.sync_interval:
                self._push()

    def flush(self) -> None:
        """Make every record logged so far durable (fsync), or visible on a remote store."""
        if self._fd is not None:
            _datasync(self._fd)
            self._last_sync = time.monotonic()
            return
        with self._lock:
            self._push()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
            with self._lock:
                if self._spans is not None:
                    self._spans.cut(minimum=FINAL_SPAN_BYTES)
            if self._spans is not None:
                self._spans.wait()
        finally:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _push(self) -> None:
        self._last_sync = time.monotonic()
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        fs, path = self.folder.fs, self.folder.file(self.name)
        repair = b""
        if self._needs_repair:
            try:
                size = fs.size(path)
            except FileNotFoundError:
                size = 0
            if size and fs.cat_file(path, start=size - 1, end=size) != b"\n":
                repair = b"\n"
            self._spans = self._span_writer(size + len(repair))
            self._needs_repair = False
        with fs.open(path, "ab") as f:
            f.write(repair + data)
        self._buffer.clear()
        if self._spans is not None:
            self._spans.add(data)


_BUFFERED: weakref.WeakSet[MetricsWriter] = weakref.WeakSet()


def _flush_at_exit(writer: MetricsWriter) -> None:
    """Push buffered (non-local) writers' last records when the interpreter exits."""
    if not _BUFFERED:
        atexit.register(_flush_buffered)
    _BUFFERED.add(writer)


def _flush_buffered() -> None:
    for writer in list(_BUFFERED):
        with contextlib.suppress(Exception):
            writer.close()
    atexit.unregister(_flush_buffered)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    while written < len(data):  # only on a signal or a full disk; finish the record
        written += os.write(fd, data[written:])


def _datasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _explain(metrics: Mapping[str, Any]) -> str:
    for key, value in metrics.items():
        try:
            _encode({key: value})
        except (TypeError, ValueError) as e:
            return f"metric {key!r} is not a JSON value: {e}"
    return "the metrics are not JSON values"


# -- reading ------------------------------------------------------------------------------


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The record on one complete line, or None for a torn fragment or garbage."""
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        # A record appended to a torn fragment without a newline between: keep the record.
        start = line.rfind(RECORD_START)
        if start <= 0:
            return None
        try:
            record = json.loads(line[start:])
        except ValueError:
            return None
    return record if _valid(record) else None


def _valid(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and type(record.get("step")) is int
        and type(record.get("rank")) is int
        and type(record.get("time")) in (int, float)
    )


def parse_lines(block: bytes) -> list[dict[str, Any]]:
    """The records in complete lines ``block`` (without its last newline)."""
    try:  # the common case, all lines whole: one parse of them all is ~2x faster
        records = json.loads(b"[" + block.replace(b"\n", b",") + b"]")
    except ValueError:
        return [r for r in map(parse_line, block.split(b"\n")) if r is not None]
    if all(map(_valid, records)):
        return records
    return [r for r in records if _valid(r)]


def read_file(folder: Folder, name: str, since: int = 0,
              max_bytes: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The complete records of one metrics file from byte ``since``, and where to go on.

    The returned offset is always just after a newline (or ``since``): a record being
    written, or the torn tail of a killed writer, is not consumed until it ends. With
    ``max_bytes``, reads about that much at most (a page; call again for more).
    """
    blocks, offset = read_blocks(folder, name, since, max_bytes)
    records: list[dict[str, Any]] = []
    for block in blocks:
        records.extend(parse_lines(block))
    return records, offset


def read_blocks(folder: Folder, name: str, since: int = 0,
                max_bytes: int | None = None) -> tuple[list[bytes], int]:
    """The complete lines of one metrics file from byte ``since``, as blocks of lines
    (each without its last newline; lines too long to be a record left out), and the
    offset to go on from: what ``read_file`` parses, for readers that parse otherwise."""
    blocks: list[bytes] = []
    offset = since
    budget = math.inf if max_bytes is None else max_bytes
    first_size = READ_CHUNK if max_bytes is None else max(1, min(READ_CHUNK, max_bytes))
    size = first_size
    while budget > 0:
        try:
            chunk = folder.read_bytes(name, offset, offset + size)
        except FileNotFoundError:
            break
        first = chunk.find(b"\n")
        full_page = budget < len(chunk)
        # the complete lines within the budget (at least one)
        end = -1 if first < 0 else chunk.rfind(b"\n", 0, max(first + 1, min(budget, len(chunk))))
        if end < 0:
            if len(chunk) < size:
                break  # an unfinished (or torn) last line: leave it for a later call
            if size < MAX_LINE_BYTES:
                size *= 4  # a long line: read more of it
                continue
            line_end = _next_newline(folder, name, offset + len(chunk))
            if line_end is None:
                break
            offset = line_end + 1  # a line this long is not a record of ours: skip it
            continue
        blocks.append(chunk[:end])
        offset += end + 1
        budget -= end + 1
        if full_page or len(chunk) < size:
            break  # the page is full, or this was the end of the file
        size = first_size
    return blocks, offset


def _next_newline(folder: Folder, name: str, offset: int) -> int | None:
    while True:
        chunk = folder.read_bytes(name, offset, offset + READ_CHUNK)
        found = chunk.find(b"\n")
        if found >= 0:
            return offset + found
        if len(chunk) < READ_CHUNK:
            return None
        offset += len(chunk)


def check_cursor(since: Any) -> Cursor:
    """A cursor from ``read_metrics``: None or 0 (the start), or ``{rank: offset}``."""
    if since is None or (type(since) is int and since == 0):
        return {}
    if not isinstance(since, Mapping):
        raise InvalidRunInput(
            f"since is the cursor read_metrics returned (or 0), not {since!r}", reason="since"
        )
    cursor = {}
    for rank, offset in since.items():
        if not str(rank).isdigit() or type(offset) is not int or offset < 0:
            raise InvalidRunInput(
                f"a cursor maps ranks to byte offsets, not {rank!r}: {offset!r}", reason="since"
            )
        cursor[str(int(rank))] = offset
    return cursor


def read_folder(folder: Folder, since: Any = None,
                max_bytes: int | None = None) -> tuple[list[dict[str, Any]], Cursor]:
    """Records of every rank since ``since``, each rank's in its order, merged by time."""
    cursor = check_cursor(since)
    following = dict(cursor)
    per_rank = []
    for name in folder.names():
        match = FILE_PATTERN.fullmatch(name)
        if not match:
            continue
        rank = str(int(match.group(1)))
        records, following[rank] = read_file(folder, name, cursor.get(rank, 0), max_bytes)
        per_rank.append(records)
    # heapq.merge keeps each input's order, even if a rank's clock stepped back.
    return list(heapq.merge(*per_rank, key=lambda r: r["time"])), following


def drop_superseded(records: Iterable[dict[str, Any]],
                    restarts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that still count after restarts.

    A checkpoint saved at step S holds the state after step S, and an attempt resumed
    from it logs S+1 onwards again; so the earlier attempts' records with step > S were
    replayed and are dropped (a restart without a checkpoint drops them all).
    """
    resumed_at = [r.get("from_checkpoint_step") for r in restarts]
    limits = [math.inf] * (len(resumed_at) + 1)  # limits[a]: last step attempt a keeps
    for i in range(len(resumed_at) - 1, -1, -1):
        step = resumed_at[i]
        limits[i] = min(-1 if step is None else step, limits[i + 1])
    last = len(resumed_at)
    return [r for r in records if r["step"] <= limits[min(r.get("attempt", 0), last)]]
