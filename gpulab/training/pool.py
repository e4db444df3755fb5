"""The warm rank processes of one Dask worker, and the task that runs a rank in one.

``run_rank`` is what the launcher submits, one task per rank, pinned to its worker: it
takes an idle rank process (or starts one), hands it the job, and waits for the answer
with a deadline, so a rank that hangs is killed — never a task that waits forever. A
process is reused only once it reported itself idle (its process group torn down).
``abort_job`` runs on the worker's event loop (``client.run``) to kill a job's rank when
another rank failed, which would otherwise wait in a collective for the lost peer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

IDLE_WAIT_SECONDS = 10.0  # a rank's teardown longer than this: the process is replaced
READY_WAIT_SECONDS = 120.0  # starting a rank process (importing torch, first time)
KEEP_IDLE = 2  # warm processes kept per worker


class RankFailed(RuntimeError):
    """A rank raised, or its process died or hung; ``rank`` and ``traceback`` say where."""

    def __init__(self, message: str, *, rank: int, traceback: str = ""):
        super().__init__(message)
        self.rank = rank
        self.traceback = traceback

    def __reduce__(self):
        return (_rebuild_rank_failed, (str(self), self.rank, self.traceback))


def _rebuild_rank_failed(message: str, rank: int, traceback: str) -> RankFailed:
    return RankFailed(message, rank=rank, traceback=traceback)


class RankProcess:
    def __init__(self) -> None:
        import cloudpickle

        self._pickle = cloudpickle
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gpulab.training.rank_server", str(to_child_r),
             str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.to_child = Connection(to_child_w, readable=False)
        self.from_child = Connection(from_child_r, writable=False)
        self.ready = False
        self.job: str | None = None

    def receive(self, timeout: float) -> tuple | None:
        """The next message, or None when ``timeout`` passes first."""
        if not self.from_child.poll(timeout):
            return None
        return self._pickle.loads(self.from_child.recv_bytes())

    def wait_ready(self) -> None:
        if self.ready:
            return
        message = self.receive(READY_WAIT_SECONDS)
        if message is None or message[0] != "ready":
            self.kill()
            raise RuntimeError(f"a rank process did not start within {READY_WAIT_SECONDS} s")
        self.ready = True

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        for conn in (self.to_child, self.from_child):
            conn.close()


class Pool:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.idle: list[RankProcess] = []
        self.busy: dict[str, RankProcess] = {}
        self.returning = 0  # processes finishing a job's teardown, soon idle

    def take(self, job: str) -> RankProcess:
        with self.lock:
            # A notebook's next launch comes right after the last: wait for a warm process
            # still tearing down rather than start a cold one.
            self.lock.wait_for(lambda: self.idle or not self.returning, IDLE_WAIT_SECONDS)
            process = None
            while self.idle:
                candidate = self.idle.pop()
                if candidate.alive():
                    process = candidate
                    break
                candidate.kill()
            if process is None:
                process = RankProcess()
            process.job = job
            self.busy[job] = process
        return process

    def finishing(self, process: RankProcess) -> None:
        with self.lock:
            self.busy.pop(process.job or "", None)
            self.returning += 1

    def give_back(self, process: RankProcess) -> None:
        """Reuse ``process`` if it says it is idle soon; else replace it."""
        message = process.receive(IDLE_WAIT_SECONDS) if process.alive() else None
        keep = message == ("idle",)
        with self.lock:
            self.returning -= 1
            process.job = None
            if keep and len(self.idle) < KEEP_IDLE:
                self.idle.append(process)
                keep = None
            self.lock.notify_all()
        if keep is not None:
            process.kill()  # a teardown that hangs is not waited for: next job, new process

    def abort(self, job: str) -> bool:
        with self.lock:
            process = self.busy.pop(job, None)
        if process is None:
            return False
        process.kill()
        return True

    def warm(self, n: int = 1) -> int:
        """Start rank processes ahead of the first job (torch imported in them)."""
        with self.lock:
            missing = max(0, n - len(self.idle))
        started = [RankProcess() for _ in range(missing)]
        for process in started:
            process.wait_ready()
        with self.lock:
            self.idle.extend(started)
            return len(self.idle)


POOL = Pool()  # one per worker process


def run_rank(payload: bytes, job: str, rank: int, timeout: float) -> Any:
    """The task one rank is: run ``payload`` (cloudpickled ``(train_fn, spec)``) in a warm
    process of this worker; the rank's return value, or ``RankFailed``."""
    process = POOL.take(job)
    try:
        process.wait_ready()
        process.to_child.send_bytes(payload)
        deadline = time.monotonic() + timeout
        while True:
            message = process.receive(min(1.0, max(0.0, deadline - time.monotonic())))
            if message is not None:
                break
            if not process.alive():
                raise RankFailed(f"rank {rank}: its process ended (killed, or the job was "
                                 "aborted after another rank failed)", rank=rank)
            if time.monotonic() >= deadline:
                process.kill()
                raise RankFailed(f"rank {rank} did not finish within {timeout:.0f} s: its "
                                 "process was stopped", rank=rank)
    except BaseException:
        POOL.abort(job)
        raise
    # The answer is back; the process group's teardown finishes on its side while this
    # task returns (the process is reused only once it says it is idle).
    POOL.finishing(process)
    threading.Thread(target=POOL.give_back, args=(process,), daemon=True).start()
    if message[0] == "error":
        raise RankFailed(f"rank {rank} failed: {message[1]}", rank=rank, traceback=message[2])
    return message[1]


def abort_job(job: str) -> bool:
    """Kill this worker's rank of ``job`` (run by ``client.run`` on the worker's loop)."""
    return POOL.abort(job)


def warm(n: int = 1) -> int:
    return POOL.warm(n)
