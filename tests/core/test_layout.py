"""Every component package imports, and the core imports no adapter (DESIGN.md's rule)."""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADAPTERS = {"gpulab_hub", "gpulab_jupyterlab", "gpulab_kernels", "jupyterhub", "jupyter_server"}


@pytest.mark.parametrize("package", ["gpulab", "gpulab_hub", "gpulab_jupyterlab", "gpulab_kernels"])
def test_component_imports_from_its_folder(package):
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().is_relative_to(REPO)


def test_core_imports_no_adapter_and_no_jupyter():
    offenders = []
    for path in (REPO / "gpulab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ADAPTERS]
    assert not offenders
