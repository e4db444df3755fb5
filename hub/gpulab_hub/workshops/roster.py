"""The students of a workshop, from a CSV file: every row checked before anything exists.

The file has a header row with a ``username`` column (other columns, such as ``name`` or
``email``, are ignored); one student per row; blank lines are skipped. A roster with any
bad row is refused whole, and the error lists every bad row by its line number, so the
instructor fixes the file once instead of once per row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Container
from dataclasses import dataclass

MAX_STUDENTS = 1000
MAX_CSV_CHARS = 1_000_000


@dataclass(frozen=True)
class Student:
    line: int  # in the CSV file, 1 = the header
    given: str  # as written in the file
    username: str  # normalised


class RosterError(ValueError):
    """A roster that can't be used. ``problems`` is [(line, message), ...] (line 0: the
    file as a whole); ``str()`` lists them all."""

    def __init__(self, problems: list[tuple[int, str]]):
        self.problems = problems
        lines = [f"line {line}: {message}" if line else message for line, message in problems]
        super().__init__(
            f"the students CSV has {len(problems)} problem(s); nothing was created:\n  "
            + "\n  ".join(lines)
        )

    def to_json(self) -> list[dict]:
        return [{"line": line, "message": message} for line, message in self.problems]


def parse_roster(
    text: str,
    normalize: Callable[[str], str],
    taken: Container[str] = (),
) -> list[Student]:
    """The students of ``text`` (a CSV), or ``RosterError`` listing every bad row.

    ``normalize(name)`` returns a name's one spelling or raises ValueError saying why it
    is invalid; ``taken`` holds the (normalised) names that already exist. Bad rows: an
    invalid name, one whose normalised form exists already, and duplicates (two rows
    normalising to one name: both rows are named).
    """
    if not isinstance(text, str) or not text.strip():
        raise RosterError([(0, "the students CSV is empty: it needs a header row 'username'")])
    if len(text) > MAX_CSV_CHARS:
        raise RosterError([(0, f"the students CSV is over {MAX_CSV_CHARS} characters")])
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    header_line = next((i for i, row in enumerate(rows) if any(c.strip() for c in row)), None)
    header = [c.strip().casefold() for c in rows[header_line]]
    if "username" not in header:
        raise RosterError(
            [(header_line + 1, f"the header row must have a 'username' column, not {header}")]
        )
    column = header.index("username")
    problems: list[tuple[int, str]] = []
    students: list[Student] = []
    first_line: dict[str, int] = {}
    for index in range(header_line + 1, len(rows)):
        row, line = rows[index], index + 1
        if not any(c.strip() for c in row):
            continue
        given = row[column].strip() if column < len(row) else ""
        if not given:
            problems.append((line, "no username"))
            continue
        try:
            name = normalize(given)
        except ValueError as e:
            problems.append((line, str(e)))
            continue
        shown = repr(given) if name == given else f"{given!r} (as {name!r})"
        if name in first_line:
            problems.append((line, f"{shown} duplicates line {first_line[name]}"))
            continue
        first_line[name] = line
        if name in taken:
            problems.append((line, f"{shown} is an existing user"))
            continue
        students.append(Student(line, given, name))
    if not problems and not students:
        problems.append((0, "the students CSV lists no students"))
    if len(students) > MAX_STUDENTS:
        problems.append((0, f"at most {MAX_STUDENTS} students per workshop, not {len(students)}"))
    if problems:
        raise RosterError(problems)
    return students
