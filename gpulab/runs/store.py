"""The run store: ``RunStore`` (create, open, list, read) and ``Run`` (log, checkpoint, end).

Layout under the store's root (any fsspec URL; see ``default_root``)::

    <root>/<owner>/<run_id>/
        manifest.json            what the run is and how it went (see ``manifest``)
        metrics/rank-<r>.jsonl   append-only records, one file per rank (see ``metrics``)
        metrics/columns/         the writers' columnar copies of spans of those files,
                                 for dashboards (see ``column_files``)
        checkpoints/step-<N>.ckpt  the last K checkpoints (see ``checkpoints``)
        artifacts/<name>         files the run keeps (see ``artifacts``)
        acl.json                 who else may view it (see ``acl``); absent: private

Who writes what: every rank appends to its own metrics file; rank 0 saves checkpoints;
the manifest is changed by the process that drives the run (the launcher, or rank 0),
serialised by a lock on local and mounted filesystems. Readers (dashboards) never write.

A process that only knows the run's URL (a DDP rank on a Dask worker) opens it with
``Run.attach(url)``; a ``Run`` also pickles as its URL, so sending one to a worker
re-attaches it there.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import traceback as tb
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gpulab.runs import acl as acls
from gpulab.runs import artifacts
from gpulab.runs.checkpoints import _MISSING, DEFAULT_KEEP, Checkpoint, Checkpoints, Loader
from gpulab.runs.errors import InvalidRunInput, RunNotFound, RunStateError
from gpulab.runs.folder import Folder, Writer
from gpulab.runs.ids import (
    MAX_WORLD_SIZE,
    RUN_ID_PATTERN,
    check_count,
    check_devices,
    check_json,
    check_name,
    check_owner,
    check_run_id,
    new_run_id,
)
from gpulab.runs.manifest import ENDED, MANIFEST, MAX_TRACEBACK_CHARS, Manifest, now_iso
from gpulab.runs.metrics import DEFAULT_SYNC_INTERVAL, Cursor, MetricsWriter, read_folder

if TYPE_CHECKING:
    from gpulab.runs.columns import Columns

ROOT_ENV = "GPULAB_RUNS_DIR"
MAX_MESSAGE_CHARS = 4096


def default_root() -> str:
    """``$GPULAB_RUNS_DIR`` (a path or fsspec URL), else ``~/gpulab-runs``.

    The home folder, not a hidden data folder, because it is what JupyterLab's file
    browser shows: researchers can open a run's metrics, checkpoints and artifacts there.
    Ranks on other hosts must see the same root: on a multi-host cluster point
    ``GPULAB_RUNS_DIR`` at a shared volume or an object store.
    """
    return os.environ.get(ROOT_ENV) or os.path.join(os.path.expanduser("~"), "gpulab-runs")


def _json_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRunInput(f"{what} is a dict, not {type(value).__name__}", reason=what)
    check_json(value, what)
    return json.loads(json.dumps(value))  # tuples become lists now, as they'll read back


class RunStore:
    """The runs under one root: ``RunStore()`` uses ``default_root()``.

    ``storage_options`` go to fsspec (credentials of an object store);
    ``keep_checkpoints`` (None keeps all) and ``sync_interval`` (seconds between metrics
    fsyncs; None: only on close) are the defaults for the runs it opens.
    """

    def __init__(self, root: str | os.PathLike | None = None, *,
                 storage_options: dict[str, Any] | None = None,
                 keep_checkpoints: int | None = DEFAULT_KEEP,
                 sync_interval: float | None = DEFAULT_SYNC_INTERVAL):
        self.storage_options = dict(storage_options or {})
        self.root = Folder.from_url(default_root() if root is None else root,
                                    self.storage_options)
        self.keep_checkpoints = keep_checkpoints
        self.sync_interval = sync_interval

    def __repr__(self) -> str:
        return f"RunStore({self.url!r})"

    @property
    def url(self) -> str:
        return self.root.url

    def _folder(self, owner: str, run_id: str) -> Folder:
        return self.root.child(check_owner(owner)).child(check_run_id(run_id))

    def _run(self, folder: Folder) -> Run:
        return Run(folder, storage_options=self.storage_options,
                   keep_checkpoints=self.keep_checkpoints, sync_interval=self.sync_interval)

    def run_url(self, owner: str, run_id: str) -> str:
        return self._folder(owner, run_id).url

    def create(self, owner: str, name: str | None = None, *,
               config: Mapping[str, Any] | None = None, world_size: int = 1,
               devices: Any = (), extra: Mapping[str, Any] | None = None,
               start: bool = True) -> Run:
        """A new run of ``owner``, status ``running`` (``created`` with ``start=False``).

        Everything is checked before anything is written: a bad owner, name, config value
        (the error names its key), world size or device raises ``InvalidRunInput``.
        """
        owner = check_owner(owner)
        name = check_name("" if name is None else name)
        config = _json_dict(config, "config")
        extra = _json_dict(extra, "extra")
        world_size = check_count(world_size, "world_size", minimum=1, maximum=MAX_WORLD_SIZE)
        devices = check_devices(devices)
        now = now_iso()
        for _ in range(8):
            run_id = new_run_id()
            folder = self._folder(owner, run_id)
            try:
                folder.create_exclusive()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 8 collisions of 24 random bits in one second
            raise RuntimeError("could not find a free run id")
        manifest = Manifest(
            id=run_id, owner=owner, name=name, created=now, updated=now,
            status="running" if start else "created", config=config,
            world_size=world_size, devices=devices, extra=extra,
        )
        folder.write_atomic(MANIFEST, manifest.to_bytes())
        return self._run(folder)

    def open(self, owner: str, run_id: str) -> Run:
        """An existing run (``RunNotFound`` if there is none)."""
        run = self._run(self._folder(owner, run_id))
        run.manifest()  # it exists
        return run

    def manifest(self, owner: str, run_id: str) -> Manifest:
        return _read_manifest(self._folder(owner, run_id))

    def list_runs(self, owner: str, *, limit: int | None = None) -> list[Manifest]:
        """``owner``'s runs, newest first (a run still being created is left out)."""
        folder = self.root.child(check_owner(owner))
        found = []
        for name in sorted(folder.names(), reverse=True):
            if limit is not None and len(found) >= limit:
                break
            if not RUN_ID_PATTERN.fullmatch(name):
                continue
            with contextlib.suppress(RunNotFound):
                found.append(_read_manifest(folder.child(name)))
        return found

    def read_metrics(self, owner: str, run_id: str, since: Any = None, *,
                     max_bytes: int | None = None) -> tuple[list[dict[str, Any]], Cursor]:
        """Records logged since ``since`` and the cursor to pass next time (see ``Run``)."""
        folder = self._folder(owner, run_id)
        if not folder.exists(MANIFEST):
            raise RunNotFound(f"no run {owner}/{run_id}", reason="run")
        return read_folder(folder.child("metrics"), since, max_bytes)

    # -- sharing (see ``acl``) ----------------------------------------------------------

    def viewable(self, owner: str, run_id: str, user: str | None = None,
                 groups: Any = (), token: str | None = None) -> Run:
        """``owner``'s run ``run_id`` if ``user`` (in ``groups``, or with a link ``token``)
        may view it.

        Otherwise one ``RunNotFound`` with the same message whether the run is missing, the
        id is malformed or the viewer has no access, so a viewer can't probe what exists.
        """
        try:
            run = self.open(owner, run_id)
            allowed = acls.can_view(run, user, groups, token)
        except (RunNotFound, InvalidRunInput):
            allowed = False
        if not allowed:
            raise RunNotFound("no such run, or you may not view it", reason="run")
        return run

    def shared_with(self, user: str, groups: Any = ()) -> list[Manifest]:
        """Manifests of other owners' runs shared with ``user`` or one of ``groups``.

        Newest first. A scan of every run's ``acl.json``; fine at a lab's scale.
        """
        found = []
        for folder, _ in acls.shared_runs(self.root, user, groups):
            with contextlib.suppress(RunNotFound):
                found.append(_read_manifest(folder))
        return sorted(found, key=lambda m: (m.created, m.id), reverse=True)


def _read_manifest(folder: Folder) -> Manifest:
    try:
        return Manifest.from_bytes(folder.read_bytes(MANIFEST))
    except FileNotFoundError:
        raise RunNotFound(f"no run at {folder.url}", reason="run") from None
    except (ValueError, TypeError) as e:
        raise RunNotFound(f"the manifest at {folder.url} is unreadable: {e}",
                          reason="run") from None


def _attach(url: str, storage_options: dict[str, Any], keep: int | None,
            sync_interval: float | None) -> Run:
    return Run.attach(url, storage_options=storage_options, keep_checkpoints=keep,
                      sync_interval=sync_interval)


class Run:
    """One run: log metrics, save and load checkpoints, keep artifacts, end it.

    Get one from ``RunStore.create``/``open`` or ``Run.attach(url)``. Used as a context
    manager it finishes the run when the block ends, or fails it with the exception's
    traceback when the block raises.
    """

    def __init__(self, folder: Folder, *, storage_options: dict[str, Any] | None = None,
                 keep_checkpoints: int | None = DEFAULT_KEEP,
                 sync_interval: float | None = DEFAULT_SYNC_INTERVAL):
        self.folder = folder
        self.id = check_run_id(folder.name)
        self.owner = check_owner(folder.parent.name)
        self.storage_options = dict(storage_options or {})
        self.sync_interval = sync_interval
        self._checkpoints = Checkpoints(folder.child("checkpoints"), keep_checkpoints)
        self._writers: dict[int, MetricsWriter] = {}
        self._lock = threading.Lock()

    @classmethod
    def attach(cls, url: str | os.PathLike, *, storage_options: dict[str, Any] | None = None,
               keep_checkpoints: int | None = DEFAULT_KEEP,
               sync_interval: float | None = DEFAULT_SYNC_INTERVAL) -> Run:
        """The run in folder ``url`` (``<root>/<owner>/<run_id>``), from any process."""
        run = cls(Folder.from_url(url, storage_options), storage_options=storage_options,
                  keep_checkpoints=keep_checkpoints, sync_interval=sync_interval)
        run.manifest()  # RunNotFound unless it is a run
        return run

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (self.url, self.storage_options, self.keep_checkpoints,
                          self.sync_interval))

    def __repr__(self) -> str:
        return f"Run({self.url!r})"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        try:
            if self.manifest().status not in ENDED:
                if error is None:
                    self.finish()
                else:
                    self.fail(error)
        finally:
            self.close()

    @property
    def url(self) -> str:
        return self.folder.url

    @property
    def keep_checkpoints(self) -> int | None:
        return self._checkpoints.keep

    def manifest(self) -> Manifest:
        """The manifest as stored now."""
        return _read_manifest(self.folder)

    # -- metrics ------------------------------------------------------------------------

    def metrics_writer(self, rank: int = 0) -> MetricsWriter:
        """This process's writer for ``rank`` (made on first use, then reused)."""
        writer = self._writers.get(rank)
        if writer is None:
            with self._lock:
                writer = self._writers.get(rank)
                if writer is None:
                    writer = MetricsWriter(self.folder.child("metrics"), rank,
                                           attempt=self.manifest().attempt,
                                           sync_interval=self.sync_interval)
                    self._writers[writer.rank] = writer
        return writer

    def log(self, step: int, rank: int = 0, **metrics: Any) -> None:
        """Append one record ``{"step", "time", "rank", "attempt", **metrics}`` for ``rank``."""
        self.metrics_writer(rank).log(step, **metrics)

    def flush(self) -> None:
        for writer in list(self._writers.values()):
            writer.flush()

    def read_metrics(self, since: Any = None, *, max_bytes: int | None = None,
                     ) -> tuple[list[dict[str, Any]], Cursor]:
        """Complete records logged since the cursor ``since`` (None or 0: from the start).

        Returns ``(records, cursor)``: each rank's records in the order logged, ranks
        merged by time, and the cursor to pass next time (a ``{rank: byte offset}`` dict,
        JSON-able). Tailing with it returns every record exactly once.
        """
        return read_folder(self.folder.child("metrics"), since, max_bytes)

    def read_columns(self, since: Any = None) -> tuple[list[Columns], Cursor]:
        """What ``read_metrics`` returns, as numpy columns per rank (``gpulab.runs.columns``):
        the same cursor, parsed without a dict per record (a dashboard's reader)."""
        from gpulab.runs.columns import read_columns

        return read_columns(self.folder.child("metrics"), since)

    def close(self) -> None:
        """Flush and close this process's metrics writers."""
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            writer.close()

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, step: int, state: Any = _MISSING, *,
                        writer: Writer | None = None) -> Checkpoint:
        """Save ``state`` (torch.save, else pickle) or ``writer(file)``'s bytes as ``step``.

        Atomic; keeps the newest ``keep_checkpoints``; lists them in the manifest.
        """
        saved = self._checkpoints.save(step, state, writer=writer)
        steps = [c.step for c in self._checkpoints.list()]

        def record(manifest: Manifest) -> None:
            manifest.checkpoints = steps

        self._update(record)
        return saved

    def checkpoints(self) -> list[Checkpoint]:
        return self._checkpoints.list()

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None."""
        return self._checkpoints.latest()

    def load_latest(self, loader: Loader | None = None,
                    **torch_kwargs: Any) -> tuple[int, Any] | None:
        """``(step, state)`` of the newest checkpoint, or None if there is none.

        ``torch_kwargs`` go to ``torch.load`` (``map_location="cpu"``; torch >= 2.6 loads
        with ``weights_only=True`` unless told otherwise); ``loader(file)`` reads a format
        of the caller's own (what a ``writer=`` wrote).
        """
        latest = self.latest_checkpoint()
        if latest is None:
            return None
        return latest.step, latest.load(loader, **torch_kwargs)

    # -- artifacts ----------------------------------------------------------------------

    def save_artifact(self, name: str, data: bytes | str | os.PathLike) -> str:
        """Save bytes, or a copy of a local file, as ``artifacts/<name>``; its URL."""
        return artifacts.save_artifact(self.folder.child("artifacts"), name, data)

    def list_artifacts(self) -> list[str]:
        return artifacts.list_artifacts(self.folder.child("artifacts"))

    def read_artifact(self, name: str) -> bytes:
        return artifacts.read_artifact(self.folder.child("artifacts"), name)

    # -- the manifest -------------------------------------------------------------------

    def _update(self, change: Any) -> Manifest:
        with self.folder.lock():
            manifest = self.manifest()
            change(manifest)
            manifest.updated = now_iso()
            self.folder.write_atomic(MANIFEST, manifest.to_bytes())
        return manifest

    def update(self, *, world_size: int | None = None, devices: Any = None,
               extra: Mapping[str, Any] | None = None) -> Manifest:
        """Record the world size and devices once known; merge ``extra`` into the manifest's."""
        if world_size is not None:
            world_size = check_count(world_size, "world_size", minimum=1, maximum=MAX_WORLD_SIZE)
        if devices is not None:
            devices = check_devices(devices)
        extra = _json_dict(extra, "extra")

        def change(manifest: Manifest) -> None:
            if world_size is not None:
                manifest.world_size = world_size
            if devices is not None:
                manifest.devices = devices
            manifest.extra.update(extra)

        return self._update(change)

    def start(self) -> Manifest:
        """``created`` -> ``running`` (no change if running already)."""
        return self._update(lambda m: self._move(m, "running", allowed=("created", "running")))

    def record_restart(self, reason: str, from_step: int | None = None) -> Manifest:
        """Record that all ranks restart, from the checkpoint at ``from_step`` (None: scratch).

        Records logged after it (by writers made after it, or by this process's) carry the
        next ``attempt``; ``metrics.drop_superseded`` drops the replayed steps.
        """
        reason = _text(reason, "reason")
        if from_step is not None:
            from_step = check_count(from_step, "from_step")

        def change(manifest: Manifest) -> None:
            self._move(manifest, "running", allowed=("created", "running"))
            manifest.restarts.append(
                {"at": now_iso(), "reason": reason, "from_checkpoint_step": from_step}
            )

        manifest = self._update(change)
        for writer in list(self._writers.values()):
            writer.attempt = manifest.attempt
        return manifest

    def finish(self) -> Manifest:
        """``running`` -> ``finished`` (metrics flushed first)."""
        self.flush()
        return self._update(lambda m: self._move(m, "finished", allowed=("created", "running"),
                                                 ended=True))

    def fail(self, message: str | BaseException, *, rank: int | None = None,
             traceback: str | None = None) -> Manifest:
        """``running`` -> ``failed`` with the error: its message, the rank, the traceback.

        ``message`` may be the exception itself; its traceback is then recorded too.
        """
        if isinstance(message, BaseException):
            if traceback is None and message.__traceback__ is not None:
                traceback = "".join(tb.format_exception(message))
            message = f"{type(message).__name__}: {message}"
        message = _text(message, "message")
        if rank is not None:
            rank = check_count(rank, "rank")
        if traceback is not None:
            if not isinstance(traceback, str):
                raise InvalidRunInput("traceback is text", reason="traceback")
            traceback = traceback[-MAX_TRACEBACK_CHARS:]
        with contextlib.suppress(OSError):
            self.flush()

        def change(manifest: Manifest) -> None:
            self._move(manifest, "failed", allowed=("created", "running"), ended=True)
            manifest.error = {"message": message, "rank": rank, "traceback": traceback,
                              "at": manifest.ended}

        return self._update(change)

    def _move(self, manifest: Manifest, status: str, *, allowed: tuple[str, ...],
              ended: bool = False) -> None:
        if manifest.status not in allowed:
            raise RunStateError(
                f"run {self.owner}/{self.id} is {manifest.status}; it can't become {status}",
                reason="status",
            )
        manifest.status = status
        if ended:
            manifest.ended = now_iso()

    # -- sharing (see ``acl``; only the owner may change it) ----------------------------

    def acl(self) -> acls.Acl:
        """Who may view this run, as stored now."""
        return acls.acl_of(self)

    def share_with(self, users: Any = (), groups: Any = (), *, actor: str) -> acls.Acl:
        return acls.share_with(self, users, groups, actor=actor)

    def unshare(self, users: Any = (), groups: Any = (), *, actor: str) -> acls.Acl:
        return acls.unshare(self, users, groups, actor=actor)

    def create_link(self, expires_in_seconds: float, *, actor: str, allowed: bool = True,
                    now: Any = None) -> tuple[str, str]:
        """A view-only link: ``(link_id, token)``; the token is not stored, keep it now."""
        return acls.create_link(self, expires_in_seconds, actor=actor, allowed=allowed,
                                now=now)

    def revoke_link(self, link_id: str, *, actor: str) -> acls.Acl:
        return acls.revoke_link(self, link_id, actor=actor)

    def can_view(self, user: str | None = None, groups: Any = (), token: str | None = None,
                 now: Any = None) -> bool:
        return acls.can_view(self, user, groups, token, now)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRunInput(f"{what} is text, not {type(value).__name__}", reason=what)
    return value[:MAX_MESSAGE_CHARS]
