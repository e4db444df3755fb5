"""docs/preprocess.md's example runs as written (untested examples rot)."""

import re
from pathlib import Path

import dask

DOC = Path(__file__).resolve().parents[2] / "docs" / "preprocess.md"


def test_the_documented_pipeline_runs(capsys):
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/preprocess.md has no python example"
    with dask.config.set(scheduler="threads"):  # no cluster needed for the example
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), {})
    assert '"temperature"' in capsys.readouterr().out  # the saved statistics
