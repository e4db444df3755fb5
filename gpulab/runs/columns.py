"""Metrics as columns: what a dashboard reads, parsed without building a dict per record.

``read_metrics`` hands out one dict per record, which is what a notebook wants and what a
dashboard of a million-step run can't afford: the JSON parse and the per-record checks are
most of a first render. ``read_columns`` reads the same complete lines with the same
cursor (``{rank: byte offset}``), and parses each rank's new lines at once with Arrow's
newline-delimited JSON reader (C++, threaded) into numpy columns.

What Arrow can't read as a table (a torn line a killed writer left, garbage, a metric that
is a number in one record and text in another) is parsed by the store's own record
parser instead, line by line, with the same rules: so both paths give the same columns.

A ``Columns`` block holds one rank's records of one read:

- ``step``, ``time``, ``rank``, ``attempt``: float arrays (a record lacking a valid
  ``step``, ``rank`` or ``time`` is not a record and is left out, as ``read_metrics`` does);
- ``values[name]``: the metric as floats, NaN where a record has no number for it
  (missing, text, a list, a bool); names whose values are never numbers are left out;
  ``present[name]``: the mask of the records that logged a number for it (a logged NaN,
  a diverging loss, is a number), only for metrics some records lack (else all are);
- ``telemetry``: the records carrying a ``gpu_uuid`` (GPU samples, a few a minute), as
  dicts, and ``is_telemetry``, the mask of their rows (their ``values`` are the samples).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gpulab.runs.folder import Folder
from gpulab.runs.metrics import (
    FILE_PATTERN,
    RESERVED,
    Cursor,
    check_cursor,
    parse_lines,
    read_blocks,
)

if TYPE_CHECKING:
    from gpulab.runs.column_files import Span

TELEMETRY_KEY = "gpu_uuid"
_PLAIN_NUMBERS = frozenset({int, float})


@dataclass
class Columns:
    """One rank's records of one read, as columns (see the module's docstring)."""

    step: np.ndarray
    time: np.ndarray
    rank: np.ndarray
    attempt: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    is_telemetry: np.ndarray | None = None
    telemetry: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.step)


def read_columns(folder: Folder, since: Any = None) -> tuple[list[Columns], Cursor]:
    """Each rank's records since the cursor ``since`` in ``folder`` (a run's ``metrics``),
    as ``Columns`` (one per rank with new records), and the cursor to pass next time."""
    from gpulab.runs import column_files

    cursor = check_cursor(since)
    following = dict(cursor)
    found = []
    saved = column_files.spans(folder)
    for name in folder.names():
        match = FILE_PATTERN.fullmatch(name)
        if not match:
            continue
        rank = str(int(match.group(1)))
        parts, following[rank] = _read_file(folder, name, saved.get(int(rank), []),
                                            cursor.get(rank, 0))
        if parts:
            found.append(concatenate(parts))
    return found, following


def _read_file(folder: Folder, name: str, spans: list[Span],
               offset: int) -> tuple[list[Columns], int]:
    """One metrics file's records from ``offset``, in file order: its writer's column
    files (``spans``, see ``gpulab.runs.column_files``) where one starts where reading
    stands, its JSON lines elsewhere."""
    from gpulab.runs import column_files

    parts: list[Columns] = []

    def parse_until(end: int | None) -> None:
        nonlocal offset
        budget = None if end is None else end - offset
        blocks, offset = read_blocks(folder, name, offset, budget)
        if blocks:
            parts.append(parse_columns(b"\n".join(blocks)))

    for span in spans:
        if span.start > offset:
            parse_until(span.start)  # a span no column file holds (a killed writer's)
        if span.start == offset:
            saved = column_files.load(folder, name, span)
            if saved is not None:
                parts.append(saved)
                offset = span.end
    parse_until(None)
    return [part for part in parts if len(part)], offset


def concatenate(parts: list[Columns]) -> Columns:
    """``Columns`` blocks one after the other, as one block (a metric some block lacks
    gets NaN and a ``present`` mask there)."""
    if len(parts) == 1:
        return parts[0]
    names = sorted({name for part in parts for name in part.values})

    def joined(get: Any) -> np.ndarray:
        return np.concatenate([get(part) for part in parts])

    merged = Columns(joined(lambda p: p.step), joined(lambda p: p.time),
                     joined(lambda p: p.rank), joined(lambda p: p.attempt))
    for name in names:
        merged.values[name] = joined(
            lambda p, n=name: p.values.get(n, np.full(len(p), math.nan)))
        if any(name in part.present or name not in part.values for part in parts):
            merged.present[name] = joined(
                lambda p, n=name: p.present.get(n, np.full(len(p), n in p.values)))
    if any(part.is_telemetry is not None for part in parts):
        merged.is_telemetry = joined(
            lambda p: np.zeros(len(p), dtype=bool) if p.is_telemetry is None
            else p.is_telemetry)
        merged.telemetry = [record for part in parts for record in part.telemetry]
    return merged


def parse_columns(lines: bytes, *, use_threads: bool = True) -> Columns:
    """Complete lines (without the last newline) as ``Columns``: Arrow where it can
    (on all cores, or on the calling thread alone without ``use_threads``)."""
    table = _arrow_table(lines, use_threads)
    if table is not None:
        columns = _from_table(table)
        if columns is not None:
            return columns
    return from_records(parse_lines(lines))


def _arrow_table(lines: bytes, use_threads: bool) -> Any:
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        return pa_json.read_json(
            io.BytesIO(lines + b"\n"),
            read_options=pa_json.ReadOptions(block_size=4 << 20, use_threads=use_threads),
            parse_options=pa_json.ParseOptions(newlines_in_values=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # a torn line, garbage, a column that changed type: the record parser


def _from_table(table: Any) -> Columns | None:
    """The table's columns, or None where a row isn't a valid record (the record parser
    then drops exactly those rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    for key, kinds in (("step", (pa.types.is_integer,)), ("rank", (pa.types.is_integer,)),
                       ("time", (pa.types.is_integer, pa.types.is_floating))):
        if key not in names:
            return None
        column = table.column(key)
        if column.null_count or not any(kind(column.type) for kind in kinds):
            return None
    if "attempt" in names and not pa.types.is_integer(table.column("attempt").type):
        return None

    def floats(name: str) -> np.ndarray:
        return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)

    rows = table.num_rows
    # a record without "attempt" is attempt 0
    attempt = np.nan_to_num(floats("attempt"), nan=0.0) if "attempt" in names else np.zeros(rows)
    columns = Columns(floats("step"), floats("time"), floats("rank"), attempt)
    for name in names:
        if name in RESERVED:
            continue
        column = table.column(name)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns.values[name] = floats(name)
            if column.null_count:
                columns.present[name] = pc.is_valid(column).to_numpy(zero_copy_only=False)
    if TELEMETRY_KEY in names:
        uuid = table.column(TELEMETRY_KEY)
        if pa.types.is_string(uuid.type) or pa.types.is_large_string(uuid.type):
            mask = pc.is_valid(uuid).to_numpy(zero_copy_only=False)
        else:
            mask = np.zeros(rows, dtype=bool)  # not text: not telemetry (as read_metrics)
        if mask.any():
            columns.is_telemetry = mask
            columns.telemetry = table.filter(pa.array(mask)).to_pylist()
    return columns


def from_records(records: list[dict[str, Any]]) -> Columns:
    """``Columns`` of parsed records (``read_metrics``'s dicts)."""

    def column(key: str, default: float = math.nan) -> np.ndarray:
        return np.array([_number(r.get(key), default) for r in records], dtype=float)

    columns = Columns(column("step"), column("time"), column("rank"), column("attempt", 0))
    names = {name for record in records for name in record}.difference(RESERVED)
    for name in sorted(names):
        present = np.array([type(r.get(name)) in _PLAIN_NUMBERS for r in records], dtype=bool)
        if present.any():
            columns.values[name] = column(name)
            if not present.all():
                columns.present[name] = present
    mask = np.array([isinstance(r.get(TELEMETRY_KEY), str) for r in records], dtype=bool)
    if mask.any():
        columns.is_telemetry = mask
        columns.telemetry = [r for r, telemetry in zip(records, mask, strict=True) if telemetry]
    return columns


def _number(value: Any, default: float = math.nan) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)
