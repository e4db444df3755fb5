"""Hatch build hook: a standard wheel ships the prebuilt JupyterLab sidebar.

``make labextension`` builds the TypeScript in ``extensions/gpulab_jupyterlab/js`` into
``extensions/gpulab_jupyterlab/labextension`` (ignored by git). A standard wheel maps that
folder to ``share/jupyter/labextensions/gpulab-jupyterlab``, where JupyterLab finds
prebuilt extensions, and refuses to build without it rather than ship a wheel with no
sidebar. An editable install leaves it out: ``make hub-deps`` links the build folder into
the venv (what ``jupyter labextension develop`` does), so the venv serves each new build
and pip never installs files through that link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LABEXTENSION = "extensions/gpulab_jupyterlab/labextension"
INSTALL_JSON = "extensions/gpulab_jupyterlab/js/install.json"
TARGET = "share/jupyter/labextensions/gpulab-jupyterlab"


class LabextensionBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        built = Path(self.root, LABEXTENSION)
        if not (built / "package.json").is_file() or not (built / "static").is_dir():
            raise RuntimeError(
                f"the JupyterLab extension is not built ({LABEXTENSION} is missing): "
                "run `make labextension` before building a wheel"
            )
        build_data["shared_data"][LABEXTENSION] = TARGET
        # The npm build copies install.json in; a folder built some other way may lack it.
        if not (built / "install.json").is_file():
            build_data["shared_data"][INSTALL_JSON] = f"{TARGET}/install.json"
