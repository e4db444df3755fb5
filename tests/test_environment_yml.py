"""environment.yml (conda) and pyproject.toml (pip) ask for the same runtime packages."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
# Packages only conda needs to list (pip gets them another way).
CONDA_ONLY = {"python", "nodejs", "configurable-http-proxy", "pip"}
# conda-forge names that differ from PyPI's.
CONDA_TO_PIP = {"pytorch": "torch"}


def pip_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]}


def conda_specs():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    specs = {}
    for entry in env["dependencies"]:
        if isinstance(entry, str):
            name, _, version = entry.partition(" ")
            name = CONDA_TO_PIP.get(name, name)
            specs[canonicalize_name(name)] = version.replace(" ", "")
    return specs


def lower_bound(specifier: str) -> str | None:
    match = re.search(r">=\s*([\w.]+)", specifier)
    return match.group(1) if match else None


def test_every_runtime_dependency_is_in_both_with_the_same_bounds():
    pip = pip_requirements()
    conda = conda_specs()
    assert set(conda) - CONDA_ONLY == set(pip), "the two lists name different packages"
    for name, requirement in pip.items():
        pip_bounds = sorted(str(s) for s in requirement.specifier)
        conda_bounds = sorted(s for s in conda[name].split(",") if s)
        assert lower_bound(str(requirement.specifier)), f"{name} has no lower bound in pyproject"
        assert conda_bounds == pip_bounds, f"{name}: pip {pip_bounds} vs conda {conda_bounds}"


def test_python_versions_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert lower_bound(project["requires-python"]) == lower_bound(conda_specs()["python"])


def test_proxy_versions_agree_with_package_json():
    import json

    npm_version = json.loads((REPO / "package.json").read_text())["dependencies"][
        "configurable-http-proxy"
    ]
    conda_minimum = lower_bound(conda_specs()["configurable-http-proxy"])
    assert Version(npm_version) >= Version(conda_minimum)
