"""The notebook contract's checks on their own (no kernel): what passes, what fails and how
the failure reads."""

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tests.notebooks.results import (
    ContractError,
    expectations,
    failed_expectations,
    parse_result,
    stdout_of,
    stored_problems,
)


def test_the_last_result_line_counts():
    text = "training...\nRESULT acc=0.5\nnoise\nRESULT acc=0.97 mse=1e-3 n=12\n"
    assert parse_result(text) == {"acc": 0.97, "mse": 0.001, "n": 12.0}


@pytest.mark.parametrize("text, message", [
    ("no result here", "no line starting with 'RESULT '"),
    ("RESULT acc", "key=value"),
    ("RESULT acc=high", "'high' is not a number"),
    ("RESULT =1", "key=value"),
])
def test_bad_result_lines_are_named(text, message):
    with pytest.raises(ContractError, match=message):
        parse_result(text)


@pytest.mark.parametrize("expect, message", [
    (None, "metadata needs"),
    ({}, "metadata needs"),
    ({"acc": [">", 0.9]}, r"expect\['acc'\] must be \[op, number\]"),
    ({"acc": [">=", "0.9"]}, r"expect\['acc'\]"),
    ({"acc": [">=", True]}, r"expect\['acc'\]"),
    ({"acc": [">="]}, r"expect\['acc'\]"),
])
def test_bad_expectations_are_named(expect, message):
    metadata = {} if expect is None else {"gpulab": {"expect": expect}}
    with pytest.raises(ContractError, match=message):
        expectations(metadata)


def test_each_missed_expectation_is_reported():
    expect = expectations({"gpulab": {"expect": {
        "acc": [">=", 0.9], "mse": ["<=", 0.01], "n": ["==", 3], "gone": [">=", 0]}}})
    failures = failed_expectations(expect, {"acc": 0.85, "mse": 0.01, "n": 3, "x": 1})
    assert failures == ["acc=0.85, expected >= 0.9", "gone: missing from the RESULT line"]
    assert failed_expectations(expect, {"acc": float("nan"), "mse": 0, "n": 3, "gone": 0}) \
        == ["acc=nan, expected >= 0.9"]


def _notebook(first_source='import os\nSIZE = os.environ.get("GPULAB_NOTEBOOK_SIZE")',
              tagged=True, expect=None):
    first = new_code_cell(first_source)
    if tagged:
        first.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# title"), first,
                             new_code_cell('print("RESULT acc=1")')])
    nb.metadata["gpulab"] = {"expect": expect or {"acc": [">=", 0.9]}}
    return nb


def test_a_clean_notebook_passes():
    assert stored_problems(_notebook()) == []


def test_stored_problems_name_what_to_fix():
    nb = _notebook(first_source="x = 1", tagged=False, expect={"acc": ["~", 1]})
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="RESULT acc=1\n")]
    nb.cells[2].execution_count = 3
    problems = stored_problems(nb)
    assert problems == [
        "its first code cell is not tagged 'parameters'",
        "its parameters cell does not read GPULAB_NOTEBOOK_SIZE",
        "code cell 2 is stored with outputs (clear them)",
        "expect['acc'] must be [op, number] with op one of >=, <=, ==, not ['~', 1]",
    ]
    assert stdout_of(nb.cells[2]) == "RESULT acc=1\n"
