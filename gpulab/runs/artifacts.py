"""Artifacts: files a run keeps beside its metrics (a plot, an exported model, a report).

One flat folder ``artifacts/``; names are single safe file names (``check_artifact_name``)
and every artifact is written atomically, like a checkpoint.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from gpulab.runs.errors import InvalidRunInput, RunNotFound
from gpulab.runs.folder import Folder, is_temp
from gpulab.runs.ids import ARTIFACT_PATTERN, check_artifact_name


def save_artifact(folder: Folder, name: str, data: Any) -> str:
    """Save bytes, or copy a local file (``data`` a ``str`` or ``os.PathLike`` path).

    Returns the artifact's URL.
    """
    name = check_artifact_name(name)
    if isinstance(data, bytes | bytearray | memoryview):
        folder.makedirs()
        folder.write_atomic(name, bytes(data))
    elif isinstance(data, str | os.PathLike):
        source = os.fspath(data)
        if not os.path.isfile(source):
            raise InvalidRunInput(f"no file {source!r} to save as artifact {name!r}",
                                  reason="artifact")
        folder.makedirs()

        def copy(f: Any) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        folder.write_atomic(name, writer=copy)
    else:
        raise InvalidRunInput(
            f"an artifact is bytes or a file's path, not {type(data).__name__}",
            reason="artifact",
        )
    return folder.fs.unstrip_protocol(folder.file(name))


def list_artifacts(folder: Folder) -> list[str]:
    return [n for n in folder.names() if not is_temp(n) and ARTIFACT_PATTERN.fullmatch(n)]


def read_artifact(folder: Folder, name: str) -> bytes:
    name = check_artifact_name(name)
    try:
        return folder.read_bytes(name)
    except FileNotFoundError:
        raise RunNotFound(f"no artifact {name!r} in {folder.parent.url}",
                          reason="artifact") from None
