"""The images' wheel stage, without Docker: the wheel that deploy/kubernetes/Dockerfile.*
build and install into the hub and single-user images.

No Docker engine here, so the test does what the wheel stage does with the same inputs: it
makes the build context by ``.dockerignore``'s rules, copies what the stage's ``COPY`` lines
name, puts in the sidebar that the stage's ``npm run build:prod`` builds (here the one
``make labextension`` built, with the same script), runs the stage's ``pip wheel --no-deps``,
and checks the wheel carries what the images rely on: the hub's spawners and
authenticators, the kernels' provisioner, the server extension and its config, the
prebuilt sidebar, and the extras the images install. What stays untested: the base
images and the pip resolution inside them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
LABEXTENSION = "extensions/gpulab_jupyterlab/labextension"


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # The matcher below knows Docker's plain and **/ patterns, not exceptions.
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not supported here"
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern names a path from the context's root (``**/`` at any
    depth), and excludes everything under what it names."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def wheel_stage(dockerfile: str) -> list[str]:
    """The lines of the Dockerfile's ``AS wheel`` stage, continuations joined."""
    text = (KUBE / dockerfile).read_text().replace("\\\n", " ")
    stage, inside = [], False
    for line in text.splitlines():
        if line.startswith("FROM "):
            inside = line.rstrip().endswith(" AS wheel")
            continue
        if inside and line.strip() and not line.startswith("#"):
            stage.append(line.strip())
    assert stage, f"{dockerfile} has no 'AS wheel' stage"
    return stage


def make_context(stage: list[str], into: Path) -> None:
    patterns = dockerignore_patterns()
    for line in stage:
        if not line.startswith("COPY "):
            continue
        *sources, target = line.split()[1:]
        for source in sources:
            destination = into / source if target == "./" else into / target
            origin = ROOT / source
            if origin.is_file():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)
                continue
            for path in sorted(origin.rglob("*")):
                relative = path.relative_to(ROOT).as_posix()
                if path.is_file() and not ignored(relative, patterns):
                    copied = destination / path.relative_to(origin)
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copied)


def test_dockerignore_keeps_local_builds_out_of_the_context():
    patterns = dockerignore_patterns()
    for local in [
        ".venv/bin/python",
        "extensions/gpulab_jupyterlab/js/node_modules/react/index.js",
        "gpulab/__pycache__/cli.cpython-311.pyc",
        f"{LABEXTENSION}/package.json",
        "var/jupyterhub.sqlite",
    ]:
        assert ignored(local, patterns), local
    for source in [
        "gpulab/cli.py",
        "extensions/gpulab_jupyterlab/js/src/index.ts",
        "extensions/gpulab_jupyterlab/js/package-lock.json",
        "hub/gpulab_hub/spawner.py",
    ]:
        assert not ignored(source, patterns), source


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> tuple[list[str], zipfile.ZipFile]:
    stages = {name: wheel_stage(name) for name in ("Dockerfile.hub", "Dockerfile.singleuser")}
    # One wheel serves both images: their wheel stages must be the same.
    assert stages["Dockerfile.hub"] == stages["Dockerfile.singleuser"]
    stage = stages["Dockerfile.hub"]
    run = " ".join(line for line in stage if line.startswith("RUN "))
    assert "npm ci" in run and "npm run build:prod" in run and "pip wheel --no-deps" in run

    context = tmp_path_factory.mktemp("context")
    make_context(stage, context)
    assert not list(context.rglob("node_modules")), "node_modules went into the context"
    assert not (context / LABEXTENSION).exists(), "a local sidebar build went into the context"
    # The stage's `npm run build:prod`: the same script `make labextension` ran.
    built = ROOT / LABEXTENSION
    assert (built / "package.json").is_file(), "run `make labextension` first"
    shutil.copytree(built, context / LABEXTENSION)

    wheels = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = list(wheels.glob("gpulab-*.whl"))
    assert len(found) == 1, found
    return stage, zipfile.ZipFile(found[0])


def test_the_wheel_carries_what_the_images_run(built_wheel):
    _, wheel = built_wheel
    names = set(wheel.namelist())
    for module in [
        "gpulab/cli.py",
        "gpulab_hub/kube.py",
        "gpulab_hub/quota_service.py",
        "gpulab_hub/dashboards_service.py",
        "gpulab_kernels/provisioner.py",
        "gpulab_jupyterlab/handlers.py",
    ]:
        assert module in names, module
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/gpulab_jupyterlab.json" in names
    sidebar = f"{data}/data/share/jupyter/labextensions/gpulab-jupyterlab"
    assert f"{sidebar}/package.json" in names
    assert any(n.startswith(f"{sidebar}/static/") and n.endswith(".js") for n in names)
    assert not [n for n in names if "node_modules" in n or "__pycache__" in n or "/js/src/" in n]


def test_the_wheel_declares_what_the_images_install(built_wheel):
    _, wheel = built_wheel
    info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
    extras = set(metadata.get_all("Provides-Extra"))
    # Dockerfile.hub installs [kubernetes]; Dockerfile.singleuser [gpu,gateway].
    for dockerfile in ("Dockerfile.hub", "Dockerfile.singleuser"):
        text = (KUBE / dockerfile).read_text()
        start = text.index("gpulab-*.whl)[") + len("gpulab-*.whl)[")
        wanted = set(text[start : text.index("]", start)].split(","))
        assert wanted <= extras, (dockerfile, wanted - extras)
    points = wheel.read(f"{info}/entry_points.txt").decode()
    # The names values.yaml and the hub configs give JupyterHub.
    for name in ("gpulab-kube", "gpulab-slurm", "gpulab-systemd", "gpulab-native",
                 "gpulab-oauth", "gpulab-gpu-provisioner", "gpulab-launcher"):
        assert f"{name} = " in points, name
