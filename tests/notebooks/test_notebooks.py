"""Every notebook under ``notebooks/`` runs end to end at the small size and its RESULT line
meets the expectations in its metadata (the contract: ``tests/notebooks/results.py``).

Each notebook runs in a fresh ``python3`` kernel of this environment (nbclient), in a
temporary folder: what it writes (generated data, runs, cluster records) lands there and
never in the repository. ``GPULAB_NOTEBOOK_SIZE=small``; the hub's variables are removed,
so the notebooks see a plain machine outside a hub, as a CI runner is.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.notebooks.results import (
    SIZE_ENV,
    code_cells,
    expectations,
    failed_expectations,
    parse_result,
    stdout_of,
    stored_problems,
)

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOKS_DIR.rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
CELL_TIMEOUT_SECONDS = 300
# Set by gpulab's hub for a user's server: a notebook in CI runs outside any hub.
HUB_VARIABLES = ("JUPYTERHUB_", "GPULAB_QUOTA_URL", "GPULAB_DASHBOARDS_URL",
                 "GPULAB_DASK_GATEWAY_ADDRESS", "GPULAB_MAX_DASK_WORKERS")


def _id(path: Path) -> str:
    return str(path.relative_to(NOTEBOOKS_DIR))


def test_notebooks_are_found():
    assert {p.parent.name for p in NOTEBOOKS} >= {"tutorials", "workshop"}, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_is_stored_clean(path):
    """Outputs cleared, a parameters cell first, expectations declared, a RESULT line last."""
    problems = stored_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{_id(path)}: " + "; ".join(problems)


def _kernel_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(HUB_VARIABLES)}
    env.update({
        SIZE_ENV: "small",
        "GPULAB_RUNS_DIR": str(tmp_path / "runs"),
        "GPULAB_CLUSTERS_DIR": str(tmp_path / "clusters"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        # One intra-op thread per process: on a small CI machine busy with other tests,
        # OpenMP's spinning threads stall each other (a CNN epoch took 12 s with 2 threads
        # under load, 0.7 s with 1).
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_runs_and_meets_its_expectations(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    expect = expectations(nb.metadata)
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_SECONDS,
                            resources={"metadata": {"path": str(workdir)}})
    started = time.monotonic()
    client.execute(env=_kernel_env(tmp_path))  # raises CellExecutionError on a failed cell
    took = time.monotonic() - started
    errors = [c for c in code_cells(nb)
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert not errors, f"{len(errors)} cell(s) errored"
    result = parse_result(stdout_of(code_cells(nb)[-1]))
    failures = failed_expectations(expect, result)
    print(f"{_id(path)}: {took:.1f} s, {result}", file=sys.stderr)
    assert not failures, f"{_id(path)} ({took:.1f} s): " + "; ".join(failures)
    written = _written_since(started)
    assert not written, f"the notebook wrote into the repository: {written}"


def _written_since(since_monotonic: float) -> list[Path]:
    """Files beside the notebooks made while it ran (its data belongs in its working folder;
    the notebooks and the README themselves may be edited meanwhile by a person)."""
    cutoff = time.time() - (time.monotonic() - since_monotonic)
    return [p for p in NOTEBOOKS_DIR.rglob("*")
            if p.is_file() and p.suffix not in (".ipynb", ".md")
            and p.stat().st_mtime >= cutoff]
