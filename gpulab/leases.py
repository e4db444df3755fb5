"""The lease book: which kernel or Dask cluster holds which of this server's GPUs.

One rule for the server's devices: whoever uses some of them directly (a kernel started by
gpulab's provisioner, a GPU cluster started by the server from the sidebar or the launcher)
first leases them here, and gets only devices nobody else holds. A cluster started from a
GPU kernel's notebook uses that kernel's lease and takes none of its own.

One JSON file (``gpulab-kernel-leases.json`` in the Jupyter runtime dir, or
``$GPULAB_KERNEL_LEASES``) read and rewritten under an ``fcntl`` lock, so holders started
at once (and several servers of one user sharing a runtime dir) never get the same device
exclusively. Each lease names its holder (``kind`` "kernel" with the kernel id, or
"cluster" with the cluster id), the holder's pid and that process's start time (a pid the
OS reused is not the holder), the notebook it serves or the cluster's name, and the server
process that made it. A cluster's pid is its owner's: the process that runs its scheduler.

The file outlives the server: every read first drops leases whose process is gone (killed
server, crashed kernel, killed cluster owner), while a holder that still runs keeps its
devices until it stops. A kernel's lease that has no kernel process yet (between
``acquire`` and ``attach``) lives as long as the server process that made it.

Framework-free on purpose, and in gpulab's core so that ``gpulab.clusters`` can use it: the
provisioner (``gpulab_kernels``), the clusters, the ``gpulab kernels leases`` command and
the tests use this object directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

LEASE_FILE_NAME = "gpulab-kernel-leases.json"
FORMAT_VERSION = 1


def default_lease_file(env: dict[str, str] | None = None) -> Path:
    """``$GPULAB_KERNEL_LEASES``, else the lease file in the Jupyter runtime dir (the
    server's ``runtime_dir`` unless configured otherwise; ``$JUPYTER_RUNTIME_DIR`` moves it)."""
    env = os.environ if env is None else env
    if env.get("GPULAB_KERNEL_LEASES"):
        return Path(env["GPULAB_KERNEL_LEASES"])
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / LEASE_FILE_NAME


def process_identity(pid: int) -> float | None:
    """The start time of a live, non-zombie process ``pid``; None when it is gone."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _alive(pid: int | None, started: float | None) -> bool:
    if pid is None:
        return False
    now_started = process_identity(pid)
    # Start times are rounded differently by successive reads; a reused pid differs by
    # far more than this.
    return now_started is not None and (started is None or abs(now_started - started) < 1.0)


KERNEL, CLUSTER = "kernel", "cluster"  # the kinds of holder


@dataclass
class Lease:
    """Devices held by one kernel or cluster. ``pid`` is None until the kernel process
    exists; a cluster's lease has its owner's pid from the start."""

    kernel_id: str  # the holder's id: a kernel id, or a cluster id when kind is "cluster"
    devices: list[str]
    shared: bool
    server_pid: int
    server_started: float | None
    pid: int | None = None
    pid_started: float | None = None
    kernel_name: str = ""
    session: str = ""  # the notebook's path, when the kernel serves one; a cluster's name
    kind: str = KERNEL
    leased_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def alive(self) -> bool:
        """True while the kernel runs, or while its server is still starting it."""
        if self.pid is not None:
            return _alive(self.pid, self.pid_started)
        return _alive(self.server_pid, self.server_started)

    def by_this_server(self) -> bool:
        return self.server_pid == os.getpid()

    def describe(self) -> str:
        """How a refusal names this lease: the kernel and its notebook (or the cluster), and
        how to stop it when the server the user talks to can't."""
        if self.kind == CLUSTER:
            name = f" ({self.session!r})" if self.session and self.session != self.kernel_id else ""
            return f"Dask cluster {self.kernel_id}{name}"
        text = f"kernel {self.kernel_id[:8]}"
        if self.session:
            text += f" ({os.path.basename(self.session)})"
        if not self.by_this_server() and self.pid is not None:
            text += (f", pid {self.pid}, left running by an earlier server process: "
                     f"stop it with `kill {self.pid}` in a terminal")
        return text


class NoFreeGPU(Exception):
    """Not enough of this server's GPUs are free; the message (worded for a kernel) says
    which kernels and clusters hold them and what to do. Nothing was leased.

    ``held_by`` maps each held device to its leases, so a cluster can word its own refusal.
    """

    def __init__(self, message: str, held_by: dict[str, list[Lease]] | None = None):
        super().__init__(message)
        self.held_by = held_by or {}


@dataclass(frozen=True)
class LeaseRequest:
    """What a kernelspec asks for (``metadata.kernel_provisioner.config``)."""

    gpus: int = 1
    share: bool = False
    fallback: str = "fail"  # "cpu": run without GPUs instead of failing

    FALLBACKS = ("cpu", "fail")

    @classmethod
    def parse(cls, config: dict[str, Any], where: str) -> LeaseRequest:
        """Check each field, naming it and the kernelspec (``where``) in the error."""
        unknown = sorted(set(config) - {"gpus", "share", "fallback"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             "the keys are 'gpus', 'share' and 'fallback'")
        gpus = config.get("gpus", 1)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"{where}: 'gpus' must be a whole number >= 0, not {gpus!r}")
        share = config.get("share", False)
        if not isinstance(share, bool):
            raise ValueError(f"{where}: 'share' must be true or false, not {share!r}")
        fallback = config.get("fallback", "fail")
        if fallback not in cls.FALLBACKS:
            raise ValueError(f"{where}: 'fallback' must be 'cpu' or 'fail', not {fallback!r}")
        return cls(gpus=gpus, share=share, fallback=fallback)


class LeaseBook:
    """The lease file and the rules for choosing devices (see the module docstring).

    Exclusive leases need devices nobody holds; shared leases may share a device with
    other shared leases but never with an exclusive one.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Lease]]:
        """The live leases, under the lock; what the block leaves in the list is written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                stored = self._read()
                leases = [lease for lease in stored if lease.alive()]
                before = [asdict(lease) for lease in leases]
                yield leases
                if len(leases) != len(stored) or [asdict(x) for x in leases] != before:
                    self._write(leases)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[Lease]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            return []  # a torn or hand-edited file: start over rather than block every kernel
        leases = []
        for item in data.get("leases", []) if isinstance(data, dict) else []:
            try:
                leases.append(Lease.from_json(item))
            except (TypeError, KeyError):
                continue  # an entry this version can't read holds nothing
        return leases

    def _write(self, leases: Sequence[Lease]) -> None:
        body = json.dumps({"version": FORMAT_VERSION, "leases": [asdict(x) for x in leases]},
                          indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".leases-")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(body)
            os.replace(tmp, self.path)  # readers see the old file or the new one, never half
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def leases(self) -> list[Lease]:
        """The live leases (reconciling the file as a side effect)."""
        with self._locked() as leases:
            return list(leases)

    def acquire(self, kernel_id: str, request: LeaseRequest, allocated: Sequence[str], *,
                prefer: Sequence[str] = (), kernel_name: str = "",
                session: str = "", kind: str = KERNEL, pid: int | None = None) -> Lease:
        """Lease ``request.gpus`` of ``allocated`` to ``kernel_id`` (replacing a lease it
        held); ``prefer`` first (a restarting kernel gets its devices back when free).
        ``kind`` "cluster" with the owner's ``pid``: a cluster's lease, exclusive whatever
        ``request.share`` says (its workers fill their devices).
        Raises NoFreeGPU, leasing nothing, when too few are free."""
        if kind not in (KERNEL, CLUSTER):
            raise ValueError(f"kind must be {KERNEL!r} or {CLUSTER!r}, not {kind!r}")
        if kind == CLUSTER:
            request = LeaseRequest(gpus=request.gpus, share=False, fallback="fail")
        with self._locked() as leases:
            leases[:] = [x for x in leases if x.kernel_id != kernel_id]
            devices = choose(request, allocated, leases, prefer)
            lease = Lease(kernel_id=kernel_id, devices=devices, shared=request.share,
                          server_pid=os.getpid(), server_started=process_identity(os.getpid()),
                          kernel_name=kernel_name, session=session, kind=kind,
                          pid=pid, pid_started=process_identity(pid) if pid else None)
            leases.append(lease)
            return lease

    def attach(self, kernel_id: str, pid: int) -> None:
        """Record the kernel's process, which keeps the lease alive from now on."""
        with self._locked() as leases:
            for lease in leases:
                if lease.kernel_id == kernel_id:
                    lease.pid, lease.pid_started = pid, process_identity(pid)

    def release(self, kernel_id: str) -> Lease | None:
        """Drop ``kernel_id``'s lease; the lease, or None when it held none."""
        with self._locked() as leases:
            for index, lease in enumerate(leases):
                if lease.kernel_id == kernel_id:
                    return leases.pop(index)
        return None


def choose(request: LeaseRequest, allocated: Sequence[str], leases: Sequence[Lease],
           prefer: Sequence[str] = ()) -> list[str]:
    """The devices for ``request`` given the other ``leases``, in allocation order with
    ``prefer`` first; shared requests pick the least shared devices."""
    if request.gpus == 0:
        return []
    held_by: dict[str, list[Lease]] = {}
    for lease in leases:
        for device in lease.devices:
            held_by.setdefault(device, []).append(lease)
    order = {device: i for i, device in enumerate(allocated)}

    def usable(device: str) -> bool:
        holders = held_by.get(device, [])
        return not holders if not request.share else all(h.shared for h in holders)

    candidates = sorted(
        (d for d in allocated if usable(d)),
        key=lambda d: (d not in prefer, len(held_by.get(d, [])), order[d]),
    )
    if len(candidates) < request.gpus:
        raise NoFreeGPU(refusal(request, allocated, held_by), held_by)
    return candidates[: request.gpus]


def refusal(request: LeaseRequest, allocated: Sequence[str],
            held_by: dict[str, list[Lease]]) -> str:
    """The message a user sees when a GPU kernel can't start (see ``choose``)."""
    wanted = f"{request.gpus} GPU{'s' if request.gpus != 1 else ''}"
    if not allocated:
        return (f"This kernel needs {wanted} but this server has none (a CPU session). "
                "Pick the kernel \"Python 3 (gpulab CPU)\", or stop your server and start it "
                "with a GPU profile.")
    if request.gpus > len(allocated):
        return (f"This kernel needs {wanted} but this server has {len(allocated)} "
                f"({', '.join(allocated)}). Stop your server and start it with a larger GPU "
                "profile, or use a kernel that asks for fewer GPUs.")
    mode = "shared" if request.share else "to itself"
    holders = []
    for device in allocated:
        on_device = held_by.get(device, [])
        if not on_device:
            continue
        kind = "shared by" if all(h.shared for h in on_device) else "held by"
        holders.append(f"{device} {kind} {'; '.join(h.describe() for h in on_device)}")
    return (f"No free GPU for this kernel: it needs {wanted} {mode} out of this server's "
            f"{len(allocated)}, and {'; '.join(holders)}. {free_them(held_by)} and start "
            "this one again, or pick the kernel \"Python 3 (gpulab CPU)\". "
            "`gpulab kernels leases` in a terminal lists the leases.")


def free_them(held_by: dict[str, list[Lease]]) -> str:
    """What frees a device, for the kinds of holder in ``held_by``."""
    kinds = {lease.kind for on_device in held_by.values() for lease in on_device}
    ways = []
    if KERNEL in kinds or not kinds:
        ways.append("Shut down a kernel that holds a GPU (Kernel > Shut Down Kernel, or the "
                    "Running Terminals and Kernels panel)")
    if CLUSTER in kinds:
        ways.append(("stop" if ways else "Stop") + " a Dask cluster that holds one (its Stop "
                    "button in the Dask clusters sidebar, or gpulab.clusters.stop(id))")
    return " or ".join(ways)
