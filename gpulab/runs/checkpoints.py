"""Checkpoints: ``checkpoints/step-<N>.ckpt``, written atomically, the last K kept.

A checkpoint saved at step N holds the training state after step N. Each is written to a
hidden temp file in the same folder, fsynced, renamed to ``step-<N>.ckpt`` and the folder
fsynced (see ``Folder.write_atomic``), so a name that exists is a complete checkpoint: a
writer killed midway leaves the previous checkpoints as they were plus a hidden temp file
that no listing counts (it is removed by a later save once nobody has touched it for
``STALE_TEMP_SECONDS``).

The payload is a caller's ``writer(file)`` callback's bytes, or an object saved with
``torch.save`` when torch is importable and ``pickle`` otherwise (torch is imported only
when a checkpoint is saved or loaded). Loading recognises the two formats by their first
bytes; pass ``loader(file)`` for anything else. Only one process (rank 0) saves.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from gpulab.runs.errors import InvalidRunInput
from gpulab.runs.folder import Folder, Writer
from gpulab.runs.ids import check_count

CHECKPOINT_PATTERN = re.compile(r"step-([0-9]{1,18})\.ckpt")
DEFAULT_KEEP = 3
STALE_TEMP_SECONDS = 600.0
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
PICKLE_MAGIC = b"\x80"  # pickle protocol 2 and later
_MISSING: Any = object()

Loader = Callable[[IO[bytes]], Any]


def checkpoint_file(step: int) -> str:
    return f"step-{step}.ckpt"


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def object_writer(state: Any) -> Writer:
    """A writer that saves ``state`` with torch.save, or pickle where torch is missing."""
    torch = _torch()
    if torch is not None:
        return lambda f: torch.save(state, f)
    return lambda f: pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_object(f: IO[bytes], **torch_kwargs: Any) -> Any:
    """Load what ``object_writer`` wrote: torch.load or pickle.load by the first bytes."""
    head = f.read(4)
    f.seek(0)
    if head.startswith(ZIP_MAGIC):
        torch = _torch()
        if torch is None:
            raise RuntimeError("this checkpoint was saved with torch.save: loading it needs torch")
        return torch.load(f, **torch_kwargs)
    if head.startswith(PICKLE_MAGIC):
        return pickle.load(f)
    raise ValueError(
        "this checkpoint is neither torch.save nor pickle data: pass loader= to read it"
    )


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint of a run (``url`` names its file)."""

    step: int
    url: str
    folder: Folder = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return checkpoint_file(self.step)

    def size(self) -> int:
        return self.folder.size(self.name)

    def open(self) -> IO[bytes]:
        return self.folder.open_read(self.name)

    def load(self, loader: Loader | None = None, **torch_kwargs: Any) -> Any:
        """The saved object (``torch_kwargs`` go to ``torch.load``, e.g. ``map_location``)."""
        with self.open() as f:
            return loader(f) if loader is not None else load_object(f, **torch_kwargs)


class Checkpoints:
    """The checkpoints folder of one run."""

    def __init__(self, folder: Folder, keep: int | None = DEFAULT_KEEP):
        self.folder = folder
        self.keep = check_keep(keep)

    def save(self, step: int, state: Any = _MISSING, *, writer: Writer | None = None) -> Checkpoint:
        step = check_count(step, "step")
        if (state is _MISSING) == (writer is None):
            raise InvalidRunInput("save a checkpoint with a state object or writer=, not both",
                                  reason="checkpoint")
        self.folder.makedirs()
        with contextlib.suppress(OSError):
            self.folder.remove_stale_temps(STALE_TEMP_SECONDS)
        if writer is None:
            writer = object_writer(state)
        self.folder.write_atomic(checkpoint_file(step), writer=writer)
        saved = self._at(step)
        self.prune()
        return saved

    def _at(self, step: int) -> Checkpoint:
        return Checkpoint(step, self.folder.fs.unstrip_protocol(self.folder.file(
            checkpoint_file(step))), self.folder)

    def list(self) -> list[Checkpoint]:
        """Every complete checkpoint, oldest step first."""
        steps = sorted(
            int(match.group(1))
            for match in map(CHECKPOINT_PATTERN.fullmatch, self.folder.names())
            if match
        )
        return [self._at(step) for step in steps]

    def latest(self) -> Checkpoint | None:
        found = self.list()
        return found[-1] if found else None

    def prune(self) -> list[int]:
        """Remove all but the ``keep`` newest checkpoints; the steps removed."""
        if self.keep is None:
            return []
        old = self.list()[: -self.keep]
        for checkpoint in old:
            self.folder.remove(checkpoint.name)
        return [c.step for c in old]


def check_keep(keep: Any) -> int | None:
    if keep is None:
        return None
    return check_count(keep, "keep_checkpoints", minimum=1)
