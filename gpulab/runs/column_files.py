"""Column files: a columnar copy of a metrics file's spans, written by its writer.

A dashboard opening a long run had to parse all its JSON lines before it could draw
(``bench.dashboard``: 0.74 s of a 1.5 s first render for a million steps). The writer
has the lines in hand as it appends them, so every ``column_span_bytes`` (8 MiB) of them, and
at close, it parses them once with the reader's own parser (``parse_columns``) and saves
the result beside the JSON lines, as an Arrow IPC file of the ``Columns`` of the file's
bytes ``[start, end)``::

    metrics/columns/rank-<r>.<start>-<end>.arrow     (offsets zero-padded to 20 digits)

``read_columns`` loads a column file where its span starts at the offset it reads from,
and parses the JSON lines everywhere else (a live tail, a span a killed writer never
saved, a file written before column files existed).

The JSON lines stay the record; a column file is only a faster way to read a span of
them, used only while it still matches them: the metrics file holds the span's bytes and
their last ``TAIL_BYTES`` have the checksum the column file recorded. A span is cut on
record boundaries the writer itself wrote, so it never starts inside a line; it is
written atomically (``Folder.write_atomic``), so a killed writer leaves a whole column
file or none. A column file that can't be written (a full disk, a read-only store) is
not an error: the span is read from JSON. A span is saved on a thread of its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpulab.runs.columns import Columns, parse_columns
from gpulab.runs.folder import Folder

FOLDER = "columns"
TAIL_BYTES = 4096
STALE_TEMP_SECONDS = 600.0  # a save takes well under a second
MAX_QUEUED = 2  # column files waiting to be saved, each up to a span of lines in memory
FORMAT = 1
_NAME = re.compile(r"rank-([0-9]{1,6})\.([0-9]{20})-([0-9]{20})\.arrow")
_VALUE, _PRESENT, _TELEMETRY = "value:", "present:", "telemetry"
_FIXED = ("step", "time", "rank", "attempt")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    """A column file: the ``Columns`` of the metrics file's bytes ``[start, end)``."""

    start: int
    end: int
    name: str


def span_name(rank: int, start: int, end: int) -> str:
    return f"rank-{rank}.{start:020d}-{end:020d}.arrow"


def spans(metrics: Folder) -> dict[int, list[Span]]:
    """The column files of each rank's metrics file, by start offset (one listing)."""
    found: dict[int, list[Span]] = {}
    for name in metrics.child(FOLDER).names():
        match = _NAME.fullmatch(name)
        if match:
            start, end = int(match.group(2)), int(match.group(3))
            if start < end:
                found.setdefault(int(match.group(1)), []).append(Span(start, end, name))
    for listed in found.values():
        listed.sort(key=lambda span: span.start)
    return found


class SpanWriter:
    """Saves the column files of one writer's lines, appended from offset ``start`` of
    ``rank``'s metrics file: ``add`` each batch as it is appended (in file order).

    Files are saved on a thread of their own (one per process): parsing 8 MiB takes
    about 0.15 s, which a training loop logging every step (or its DDP peers, waiting
    at the next all-reduce) should not wait for. ``wait`` (the writer's close) waits for
    them."""

    def __init__(self, metrics: Folder, rank: int, start: int, span_bytes: int):
        self.metrics = metrics
        self.rank = rank
        self.start = self.end = start
        self.span_bytes = span_bytes
        self._pending: list[bytes] = []
        self._saves: list[Future] = []
        self._failed = False

    def add(self, data: bytes) -> None:
        self._pending.append(data)
        self.end += len(data)
        if self.end - self.start >= self.span_bytes:
            self.cut()

    def cut(self, minimum: int = 1) -> None:
        """Save the pending lines as a column file if they are ``minimum`` bytes or more
        (else they are left to the JSON parser)."""
        start, end = self.start, self.end
        if end - start < minimum:
            return
        lines, self._pending, self.start = b"".join(self._pending), [], end
        if self._failed:
            return  # one warning, then no more tries: the JSON lines have it all
        self._saves = [save for save in self._saves if not save.done()]
        if len(self._saves) >= MAX_QUEUED:  # the disk is slower than the trainer
            wait(self._saves[:1])
        job = _saver().submit(save, self.metrics, self.rank, start, end, lines)
        job.add_done_callback(self._saved)
        self._saves.append(job)

    def wait(self) -> None:
        """Wait until every column file cut so far is saved (or failed)."""
        wait(self._saves)
        self._saves = []

    def _saved(self, job: Future) -> None:
        error = job.exception()
        if error is not None and not self._failed:
            # An optimisation only: a failure never reaches the training's log().
            self._failed = True
            log.warning("metrics of rank %s: no column files (%s); dashboards read the "
                        "JSON lines", self.rank, error)


_SAVER: tuple[int, ThreadPoolExecutor] | None = None
_SAVER_LOCK = threading.Lock()


def _saver() -> ThreadPoolExecutor:
    """This process's saving thread (a forked child, a DDP rank, makes its own: the
    parent's thread is not there)."""
    global _SAVER
    with _SAVER_LOCK:
        if _SAVER is None or _SAVER[0] != os.getpid():
            _SAVER = (os.getpid(), ThreadPoolExecutor(1, "gpulab-column-files"))
        return _SAVER[1]


def save(metrics: Folder, rank: int, start: int, end: int, lines: bytes) -> None:
    """Save the column file of ``lines``, the metrics file's bytes ``[start, end)``."""
    import pyarrow as pa

    tail = lines[-TAIL_BYTES:]
    meta = {"format": FORMAT, "start": start, "end": end, "tail_bytes": len(tail),
            "tail_crc32": zlib.crc32(tail)}
    # One core: the trainer's own threads (data loaders) keep the others.
    table = _to_table(parse_columns(lines.removesuffix(b"\n"), use_threads=False), meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table)
    folder = metrics.child(FOLDER)
    folder.makedirs()
    folder.write_atomic(span_name(rank, start, end), sink.getvalue().to_pybytes())
    folder.remove_stale_temps(STALE_TEMP_SECONDS)  # a killed writer's half-saved file


def load(metrics: Folder, file_name: str, span: Span) -> Columns | None:
    """The ``Columns`` a column file holds, or None where it no longer matches the
    metrics file ``file_name`` (or can't be read): then the span is read from JSON."""
    import pyarrow as pa

    try:
        data = metrics.child(FOLDER).read_bytes(span.name)
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        meta = json.loads(table.schema.metadata[b"gpulab"])
        if (meta["format"], meta["start"], meta["end"]) != (FORMAT, span.start, span.end):
            return None
        size = meta["tail_bytes"]
        tail = metrics.read_bytes(file_name, span.end - size, span.end)
        if len(tail) != size or zlib.crc32(tail) != meta["tail_crc32"]:
            return None  # the metrics file was replaced or cut: not these lines any more
        return _from_table(table.combine_chunks(), meta)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None


def _to_table(columns: Columns, meta: dict[str, Any]) -> Any:
    import pyarrow as pa

    arrays: dict[str, Any] = {key: getattr(columns, key) for key in _FIXED}
    for name, values in columns.values.items():
        arrays[_VALUE + name] = values
    for name, present in columns.present.items():
        arrays[_PRESENT + name] = present
    if columns.is_telemetry is not None:
        arrays[_TELEMETRY] = columns.is_telemetry
    # Telemetry rows are a few a minute: kept whole, as the records they are.
    meta = {**meta, "telemetry": columns.telemetry}
    return pa.table(arrays, metadata={"gpulab": json.dumps(meta)})


def _from_table(table: Any, meta: dict[str, Any]) -> Columns:
    def array(key: str) -> np.ndarray:
        return table.column(key).to_numpy()

    columns = Columns(*(array(key) for key in _FIXED))
    for key in table.column_names:
        if key.startswith(_VALUE):
            columns.values[key.removeprefix(_VALUE)] = array(key)
        elif key.startswith(_PRESENT):
            columns.present[key.removeprefix(_PRESENT)] = array(key)
    if _TELEMETRY in table.column_names:
        columns.is_telemetry = array(_TELEMETRY)
        columns.telemetry = meta["telemetry"]
    return columns
