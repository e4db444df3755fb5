"""Processes for the run store's crash tests to SIGKILL:
``python -m tests.runs.writer_process MODE RUN_URL ARGS...``

- ``metrics URL RANK START BYTES``: logs records of about BYTES bytes (steps START,
  START+1, ...) through ``Run.attach(URL)`` as fast as it can; prints READY after the first.
- ``tail URL RANK COUNT``: logs COUNT small records at a steady pace, then DONE and exits.
- ``checkpoint URL STEP MEGABYTES``: saves checkpoint STEP with a writer callback that
  writes MEGABYTES of 1 MiB chunks; after half of them it prints HALF and blocks (the
  test kills it there, midway through the write).
- ``checkpoints URL START MEGABYTES``: saves objects (a dict holding MEGABYTES of bytes,
  pickled) as checkpoints START, START+1, ... in a loop; prints READY after the first.
"""

from __future__ import annotations

import sys
import time

from gpulab.runs import Run


def main(mode: str, url: str, *args: str) -> None:
    run = Run.attach(url)
    if mode == "metrics":
        rank, start, size = map(int, args)
        writer = run.metrics_writer(rank)
        writer.max_record_bytes = 2 * size + 1024
        blob = "x" * size
        step = start
        while True:
            writer.log(step, blob=blob, check=step * 7)
            if step == start:
                print("READY", flush=True)
            step += 1
    elif mode == "tail":
        rank, count = map(int, args)
        for step in range(count):
            run.log(step, rank=rank, loss=1.0 / (step + 1))
            if step % 50 == 0:
                time.sleep(0.002)
        run.close()
        print("DONE", flush=True)
    elif mode == "checkpoint":
        step, megabytes = map(int, args)
        chunk = bytes(range(256)) * 4096  # 1 MiB

        def slow_writer(f):
            for i in range(megabytes):
                f.write(chunk)
                if i == megabytes // 2:
                    f.flush()
                    print("HALF", flush=True)
                    sys.stdin.read()  # blocks until the test kills us

        run.save_checkpoint(step, writer=slow_writer)
        print("SAVED", flush=True)  # not reached when killed
    elif mode == "checkpoints":
        start, megabytes = map(int, args)
        sys.modules["torch"] = None  # pickle: no 1 s torch import per process (same atomicity)
        payload = b"\x07" * (megabytes << 20)
        step = start
        while True:
            run.save_checkpoint(step, {"step": step, "payload": payload})
            if step == start:
                print("READY", flush=True)
            step += 1
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
