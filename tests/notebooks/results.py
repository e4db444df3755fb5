"""The notebooks' contract, checked without running anything.

Each notebook under ``notebooks/``:

- opens (first code cell) with a cell tagged ``parameters`` that reads
  ``GPULAB_NOTEBOOK_SIZE`` (``small`` in CI, ``full`` by default);
- declares in its metadata what it claims:
  ``{"gpulab": {"expect": {"test_accuracy": [">=", 0.9], "test_mse": ["<=", 0.01]}}}``;
- ends with a cell that prints one line ``RESULT key=value key=value ...`` with those keys;
- is stored with its outputs cleared.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

SIZE_ENV = "GPULAB_NOTEBOOK_SIZE"
OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


class ContractError(AssertionError):
    """A notebook breaks the contract above; the message says what to fix."""


def expectations(metadata: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """``metadata["gpulab"]["expect"]``, checked: ``{key: (op, number)}``."""
    expect = metadata.get("gpulab", {}).get("expect")
    if not isinstance(expect, Mapping) or not expect:
        raise ContractError('the notebook\'s metadata needs {"gpulab": {"expect": '
                            '{"KEY": [">=", NUMBER], ...}}} (what its RESULT line claims)')
    checked = {}
    for key, rule in expect.items():
        if (not isinstance(rule, list | tuple) or len(rule) != 2 or rule[0] not in OPERATORS
                or isinstance(rule[1], bool) or not isinstance(rule[1], int | float)):
            raise ContractError(f"expect[{key!r}] must be [op, number] with op one of "
                                f"{', '.join(OPERATORS)}, not {rule!r}")
        checked[key] = (rule[0], float(rule[1]))
    return checked


def parse_result(text: str) -> dict[str, float]:
    """The last ``RESULT k=v ...`` line in ``text``, as numbers."""
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise ContractError("the last cell printed no line starting with 'RESULT '")
    values = {}
    for item in lines[-1].split()[1:]:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ContractError(f"RESULT items are key=value, not {item!r}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise ContractError(f"RESULT {key}={raw!r} is not a number") from None
    return values


def failed_expectations(expect: Mapping[str, tuple[str, float]],
                        result: Mapping[str, float]) -> list[str]:
    """Each expectation the result misses, in words (empty: all hold)."""
    failures = []
    for key, (op, bar) in expect.items():
        if key not in result:
            failures.append(f"{key}: missing from the RESULT line")
        elif not math.isfinite(result[key]) or not OPERATORS[op](result[key], bar):
            failures.append(f"{key}={result[key]:g}, expected {op} {bar:g}")
    return failures


def stdout_of(cell: Mapping[str, Any]) -> str:
    return "".join(
        "".join(out["text"]) if isinstance(out.get("text"), list) else out.get("text", "")
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )


def code_cells(nb: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def stored_problems(nb: Mapping[str, Any]) -> list[str]:
    """What is wrong with a notebook as stored in the repository (empty: nothing)."""
    problems = []
    cells = code_cells(nb)
    if not cells:
        return ["it has no code cells"]
    first = cells[0]
    if "parameters" not in first.get("metadata", {}).get("tags", []):
        problems.append("its first code cell is not tagged 'parameters'")
    if SIZE_ENV not in "".join(first["source"]):
        problems.append(f"its parameters cell does not read {SIZE_ENV}")
    for number, cell in enumerate(cells, 1):
        if cell.get("outputs") or cell.get("execution_count") is not None:
            problems.append(f"code cell {number} is stored with outputs (clear them)")
    if "RESULT " not in "".join(cells[-1]["source"]):
        problems.append("its last code cell does not print the RESULT line")
    try:
        expectations(nb.get("metadata", {}))
    except ContractError as e:
        problems.append(str(e))
    return problems
