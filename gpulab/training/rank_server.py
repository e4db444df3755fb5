"""A warm process that runs DDP ranks, one job at a time, for the Dask worker that
started it (``pool.RankProcess``).

    python -m gpulab.training.rank_server READ_FD WRITE_FD

Why a process of its own: DDP inside a Dask worker's task thread can deadlock at teardown
(the task thread holds the GIL while ``~ProcessGroupGloo`` joins a gloo thread that needs
it; cf. pytorch/pytorch#56297). Here a rank runs in its process's main thread, as under
torchrun; a rank that still hangs is killed by its worker and a fresh process takes its
place. The process stays warm between jobs (torch imported, CUDA initialised), so a
notebook's second launch starts in milliseconds.

Protocol on the two pipes (``multiprocessing.connection`` framing, cloudpickle payloads):
the process says ``("ready", pid)`` once torch is imported; for each job it receives
``(train_fn, spec)`` and answers ``("ok", result)`` or ``("error", message, traceback)``,
then ``("idle",)`` once the process group is torn down. It exits when its worker dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when the worker that started it dies (Linux), and watch the
    parent pid elsewhere as a fallback."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="gpulab-parent-watch", daemon=True).start()


def run_job(train_fn, spec: dict):
    """One rank of one job: environment as torchrun sets it, the process group, the
    function, and the teardown (always)."""
    import torch
    import torch.distributed as dist

    from gpulab.training.context import TrainContext

    for name, value in spec["env"].items():
        os.environ[name] = str(value)
    backend = spec["backend"]
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = torch.device("cpu")
    if backend == "nccl":
        # A Dask-CUDA worker lists its own GPU first in CUDA_VISIBLE_DEVICES.
        torch.cuda.set_device(0)
        device = torch.device("cuda", 0)
    from datetime import timedelta

    if spec["rank"] != 0:
        _wait_for_master(spec["env"]["MASTER_ADDR"], int(spec["env"]["MASTER_PORT"]),
                         spec["collective_timeout"])
    dist.init_process_group(
        backend,
        init_method=f"tcp://{spec['env']['MASTER_ADDR']}:{spec['env']['MASTER_PORT']}",
        rank=spec["rank"],
        world_size=spec["world_size"],
        timeout=timedelta(seconds=spec["collective_timeout"]),
    )
    try:
        ctx = TrainContext.for_rank(spec, device=device, backend=backend)
        try:
            return train_fn(ctx)
        finally:
            ctx.close()
    finally:
        dist.destroy_process_group()


def _wait_for_master(host: str, port: int, timeout: float) -> None:
    """Until rank 0's store listens. A rank that connects before it does is refused, and
    torch's connect backoff then costs it 0.4-0.75 s: most of a warm relaunch. (If it never
    listens, init_process_group reports the failure in its own words.)"""
    from gpulab.net import wait_for_port

    wait_for_port(host, port, timeout, every=0.002)


def serve(conn_in: Connection, conn_out: Connection) -> None:
    import cloudpickle
    import torch  # noqa: F401  (warm: imported before the first job arrives)

    conn_out.send_bytes(cloudpickle.dumps(("ready", os.getpid())))
    while True:
        try:
            payload = conn_in.recv_bytes()
        except EOFError:
            return
        try:
            train_fn, spec = cloudpickle.loads(payload)
            result = run_job(train_fn, spec)
            answer = ("ok", result if spec.get("return_result", True) else None)
            try:
                data = cloudpickle.dumps(answer)
            except Exception as e:  # noqa: BLE001 - the user's return value
                data = cloudpickle.dumps(("error", f"the return value can't be sent back: {e}",
                                          traceback.format_exc()))
        except BaseException as e:  # noqa: BLE001 - reported to the caller with the rank
            data = cloudpickle.dumps(("error", f"{type(e).__name__}: {e}",
                                      traceback.format_exc()))
        conn_out.send_bytes(data)
        conn_out.send_bytes(cloudpickle.dumps(("idle",)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    serve(Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
