"""DDP training: ``gpulab.training.run`` against ``torchrun``, the same function on both.

    .venv/bin/python -m bench.ddp [--quick] [--rounds R] [--steps N] [--pairs P]

``bench.ddp_workload.train`` (an MLP on scikit-learn's digits, 2 ranks, gloo on CPU, the
same seed, batch and steps) is launched, in one run, by:

- ``torchrun --standalone --nproc_per_node=2 -m bench.ddp_torchrun_script`` (a fresh
  launch each time: processes start, torch imports, rendezvous);
- ``gpulab.training.run`` on a fresh ``gpulab.clusters.start(workers=2, quota=None)`` per
  round: its FIRST launch (the workers start their rank processes), a SECOND launch on the
  same warm workers, passing the cluster handle both times as the docs do
  (``training.run(train, cluster)``), then a warm launch given a ``Client``, then ``--pairs``
  pairs of warm runs with and without ``ctx.log(step, loss=..., samples=...)`` every step.

Rounds alternate the order (torchrun first, then gpulab first; the pairs alternate
too), so a busy machine's drift weighs on both. What is measured:

- launch to first step: from just before ``subprocess.Popen`` (torchrun) or the call to
  ``training.run`` to the end of the first optimiser step, by rank 0's ``time.time()``;
- samples/s: global samples over the steady-state steps (after the first ``--warmup``);
- the logger's overhead: the steady-state loop's time, logging vs not, paired by run.

Last line: ``throughput_ratio`` = gpulab / torchrun samples/s (medians; goal >= 0.97),
``relaunch_ratio`` = gpulab's second launch / torchrun's launch (goal <= 0.05),
``logging_overhead`` = median over pairs of (t_logging - t_plain) / t_plain (goal <= 0.02),
then the raw seconds and rates. On 2 shared cores a run's loop time moves by 10-20 % with
other load, more than the logger costs, so two more figures bound it:
``logging_overhead_step`` (the same by each run's median step) and
``logging_overhead_est`` (the time rank 0 spent inside ``ctx.log`` over the rest of its
loop, median over the logging runs). A call timed in a tight loop here
(``log_call_loop_us``) costs a fraction of one made between training steps, with cold
caches (``log_call_rank_us``): the latter is what a run pays.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _torchrun(world: int, steps: int, warmup: int, folder: str) -> dict[str, Any]:
    out = os.path.join(folder, f"torchrun-{time.monotonic_ns()}.json")
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone",
               f"--nproc_per_node={world}", "-m", "bench.ddp_torchrun_script", out,
               str(steps), str(warmup)]
    t0 = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{done.stderr[-4000:]}")
    with open(out) as f:
        result = json.load(f)
    return _since(result, t0, wall)


def _since(result: dict[str, Any], t0: float, wall: float) -> dict[str, Any]:
    """Rank 0's timestamps as seconds since the launch began at ``t0``."""
    return dict(result, launch_s=result["t_first_step"] - t0, enter_s=result["t_enter"] - t0,
                process_s=result["t_process"] - t0, imported_s=result["t_imported"] - t0,
                wall_s=wall)


def _gpulab(target: Any, world: int, steps: int, warmup: int, log: bool,
            store: Any) -> dict[str, Any]:
    from bench.ddp_workload import train
    from gpulab import training

    fn = functools.partial(train, steps=steps, warmup=warmup, log=log)
    t0 = time.time()
    # The progress display (a notebook user's default) prints to stderr outside a notebook.
    with contextlib.redirect_stderr(io.StringIO()):
        result = training.run(fn, target, world_size=world, backend="gloo", store=store,
                              name="bench-ddp", max_restarts=0, timeout=600)
    return _since(result, t0, time.time() - t0)


def _clients() -> set[int]:
    from distributed.client import _global_clients

    return {id(c) for c in list(_global_clients.values())}


def _close_clients_but(keep: set[int]) -> int:
    """Close the Clients made since ``keep`` was taken (``training.run(fn, cluster)`` makes
    one per call and leaves it open); how many there were."""
    from distributed.client import _global_clients

    extra = [c for c in list(_global_clients.values()) if id(c) not in keep]
    for client in extra:
        with contextlib.suppress(Exception):
            client.close(timeout=5)
    return len(extra)


def _gpulab_round(args: argparse.Namespace, registry: Any, store: Any, r: int,
                  times: dict[str, list[float]], results: list[dict[str, Any]],
                  leaked: list[int]) -> None:
    from gpulab import clusters

    before = _clients()
    t0 = time.perf_counter()
    cluster = clusters.start(workers=args.world_size, protocol=args.protocol, progress=False,
                             quota=None, registry=registry)
    times["cluster start"].append(time.perf_counter() - t0)
    client = None
    try:
        run = functools.partial(_gpulab, world=args.world_size, steps=args.steps,
                                warmup=args.warmup, store=store)
        for kind in ("first", "second"):
            result = run(cluster, log=False)
            _record(times, results, f"gpulab {kind}", result)
            _note(r, f"gpulab {kind} launch", result)
        client = cluster.client()
        result = run(client, log=False)
        _record(times, results, "gpulab client", result)
        _note(r, "gpulab warm, Client", result)
        for p in range(args.pairs):
            order = (False, True) if (p + r) % 2 == 0 else (True, False)
            pair = {}
            for log in order:
                pair[log] = run(client, log=log)
                kind = "gpulab logging" if log else "gpulab plain"
                _record(times, results, kind, pair[log])
                _note(r, kind, pair[log])
            times["pair overhead"].append(pair[True]["loop_s"] / pair[False]["loop_s"] - 1)
            times["pair step overhead"].append(
                pair[True]["step_median_s"] / pair[False]["step_median_s"] - 1)
    finally:
        if client is not None:
            client.close()
        leaked.append(_close_clients_but(before))
        cluster.stop()


def _record(times: dict[str, list[float]], results: list[dict[str, Any]], kind: str,
            result: dict[str, Any]) -> None:
    results.append(result)
    times[f"{kind} launch"].append(result["launch_s"])
    times[f"{kind} enter"].append(result["enter_s"])
    times[f"{kind} process"].append(result["process_s"])
    times[f"{kind} imported"].append(result["imported_s"])
    times[f"{kind} wall"].append(result["wall_s"])
    times[f"{kind} rate"].append(result["samples_per_s"])
    times[f"{kind} loop"].append(result["loop_s"])
    if result["log_s"]:
        calls = result["steady_steps"]
        times["log in rank"].append(result["log_s"] / calls * 1e6)
        times["log share"].append(result["log_s"] / (result["loop_s"] - result["log_s"]))


def _note(r: int, what: str, result: dict[str, Any]) -> None:
    print(f"round {r + 1} {what:<24} launch {result['launch_s']:7.3f} s  "
          f"{result['samples_per_s']:8.0f} samples/s  loop {result['loop_s']:.3f} s",
          file=sys.stderr, flush=True)


def _log_call_us(n: int = 5000) -> float:
    """What one ``ctx.log(step, loss=..., samples=...)`` costs here in a tight loop (µs):
    warm caches, a fraction of what a call between training steps costs."""
    from gpulab.runs import RunStore
    from gpulab.training import TrainContext

    with tempfile.TemporaryDirectory(prefix="gpulab-bench-ddp-log-") as folder:
        run = RunStore(folder).create("bench", "log-cost", world_size=1)
        ctx = TrainContext(rank=0, local_rank=0, world_size=1, local_world_size=1,
                           device="cpu", backend="gloo", attempt=0, run_url=run.url, _run=run)
        ctx.log(0, loss=1.0, samples=128)  # the writer is made on first use
        t0 = time.perf_counter()
        for step in range(1, n + 1):
            ctx.log(step, loss=0.123456789, samples=128)
        elapsed = time.perf_counter() - t0
        ctx.close()
    return elapsed / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds (about a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 quick, 6 full")
    parser.add_argument("--steps", type=int, default=None, help="default 300 quick, 800 full")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the rate")
    parser.add_argument("--pairs", type=int, default=None,
                        help="logging/plain pairs a round (default 2 quick, 3 full)")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--protocol", default="tls", choices=("tls", "tcp"),
                        help="the cluster's protocol (gpulab's default: tls)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.steps = args.steps or (300 if args.quick else 800)
    args.pairs = args.pairs if args.pairs is not None else (2 if args.quick else 3)
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and less than --steps")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="gpulab-bench-ddp-")
    try:
        return _measure(args, scratch, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(args: argparse.Namespace, scratch: str, started: float) -> int:
    from bench.ddp_workload import DATA
    from gpulab.clusters import Registry
    from gpulab.runs import RunStore

    registry = Registry(os.path.join(scratch, "clusters"))
    store = RunStore(os.path.join(scratch, "runs"))
    times: dict[str, list[float]] = {
        k: [] for k in ("cluster start", "pair overhead", "pair step overhead", "log in rank",
                        "log share")}
    for kind in ("torchrun", "gpulab first", "gpulab second", "gpulab client",
                 "gpulab plain", "gpulab logging"):
        for what in ("launch", "enter", "process", "imported", "wall", "rate", "loop"):
            times[f"{kind} {what}"] = []
    results: list[dict[str, Any]] = []
    leaked: list[int] = []
    print(f"data: {DATA}; {args.world_size} ranks, gloo, {args.steps} steps "
          f"({args.warmup} warm-up), {args.rounds} rounds", file=sys.stderr)
    for r in range(args.rounds):
        sides = ["torchrun", "gpulab"] if r % 2 == 0 else ["gpulab", "torchrun"]
        for side in sides:
            if side == "torchrun":
                result = _torchrun(args.world_size, args.steps, args.warmup, scratch)
                _record(times, results, "torchrun", result)
                _note(r, "torchrun", result)
            else:
                _gpulab_round(args, registry, store, r, times, results, leaked)
    log_us = _log_call_us()
    run_s = time.perf_counter() - started

    med = {k: statistics.median(v) for k, v in times.items() if v}
    checksums = {round(x["checksum"], 9) for x in results}
    threads = sorted({x["threads"] for x in results})
    rows = [
        ("torchrun: launch -> first step", "torchrun launch", "s"),
        ("torchrun: launch -> rank process", "torchrun process", "s"),
        ("torchrun: launch -> torch imported", "torchrun imported", "s"),
        ("torchrun: launch -> train_fn", "torchrun enter", "s"),
        ("gpulab: cluster start (fresh)", "cluster start", "s"),
        ("gpulab first: launch -> first step", "gpulab first launch", "s"),
        ("gpulab first: launch -> rank process", "gpulab first process", "s"),
        ("gpulab first: launch -> torch imported", "gpulab first imported", "s"),
        ("gpulab first: launch -> train_fn", "gpulab first enter", "s"),
        ("gpulab second: launch -> first step", "gpulab second launch", "s"),
        ("gpulab second: launch -> train_fn", "gpulab second enter", "s"),
        ("gpulab warm, Client: -> first step", "gpulab client launch", "s"),
        ("gpulab warm, Client: -> train_fn", "gpulab client enter", "s"),
        ("gpulab every warm launch: -> 1st step", "gpulab warm launch", "s"),
        ("torchrun: launch -> exit", "torchrun wall", "s"),
        ("gpulab second: launch -> return", "gpulab second wall", "s"),
        ("torchrun samples/s", "torchrun rate", "/s"),
        ("gpulab samples/s (not logging)", "gpulab rate", "/s"),
        ("gpulab loop, not logging", "gpulab plain loop", "s"),
        ("gpulab loop, logging every step", "gpulab logging loop", "s"),
        ("logging overhead, by pair", "pair overhead", ""),
        ("  the same, by median step", "pair step overhead", ""),
        ("  ctx.log time / rest of the loop", "log share", ""),
        ("ctx.log per call in rank 0 (us)", "log in rank", "us"),
    ]
    gpulab_plain = ("gpulab first", "gpulab second", "gpulab client", "gpulab plain")
    times["gpulab rate"] = [v for k in gpulab_plain for v in times[f"{k} rate"]]
    warm = ("gpulab second", "gpulab client", "gpulab plain", "gpulab logging")
    times["gpulab warm launch"] = [v for k in warm for v in times[f"{k} launch"]]
    for key in ("gpulab rate", "gpulab warm launch"):
        med[key] = statistics.median(times[key])
    print(f"\n{'what':<40}{'n':>4}{'median':>11}{'min':>11}{'max':>11}")
    for label, key, unit in rows:
        values = times[key]
        fmt = {"/s": lambda v: f"{v:11.0f}", "": lambda v: f"{v:+11.4f}",
               "us": lambda v: f"{v:11.1f}"}.get(unit, lambda v: f"{v:11.3f}")
        print(f"{label:<40}{len(values):>4}{fmt(med[key])}{fmt(min(values))}"
              f"{fmt(max(values))}")
    print(f"{'ctx.log per call, tight loop here (us)':<40}{1:>4}{log_us:11.1f}")
    print(f"same parameters on every run: {len(checksums) == 1}; torch threads per rank: "
          f"{threads}; Clients left open by training.run(fn, cluster): {sum(leaked)}")

    throughput_ratio = med["gpulab rate"] / med["torchrun rate"]
    relaunch_ratio = med["gpulab second launch"] / med["torchrun launch"]
    logging_overhead = med["pair overhead"]
    step_ms = med["gpulab plain loop"] / (args.steps - args.warmup) * 1e3
    # Less sensitive to other load on the machine: the best loop of each kind, and the
    # time the ranks spent inside ctx.log against the rest of their loop.
    overhead_min = min(times["gpulab logging loop"]) / min(times["gpulab plain loop"]) - 1
    overhead_est = med["log share"]
    print(
        f"\nthroughput_ratio={throughput_ratio:.3f} relaunch_ratio={relaunch_ratio:.4f} "
        f"logging_overhead={logging_overhead:.4f} logging_overhead_min={overhead_min:.4f} "
        f"logging_overhead_step={med['pair step overhead']:.4f} "
        f"logging_overhead_est={overhead_est:.4f} "
        f"torchrun_samples_per_s={med['torchrun rate']:.0f} "
        f"gpulab_samples_per_s={med['gpulab rate']:.0f} "
        f"torchrun_launch_s={med['torchrun launch']:.3f} "
        f"gpulab_first_launch_s={med['gpulab first launch']:.3f} "
        f"gpulab_relaunch_s={med['gpulab second launch']:.3f} "
        f"gpulab_client_relaunch_s={med['gpulab client launch']:.3f} "
        f"relaunch_client_ratio={med['gpulab client launch'] / med['torchrun launch']:.4f} "
        f"warm_launch_median_s={med['gpulab warm launch']:.3f} "
        f"warm_launch_max_s={max(times['gpulab warm launch']):.3f} "
        f"cluster_start_s={med['cluster start']:.3f} "
        f"loop_plain_s={med['gpulab plain loop']:.4f} "
        f"loop_logging_s={med['gpulab logging loop']:.4f} step_ms={step_ms:.3f} "
        f"log_call_rank_us={med['log in rank']:.1f} log_call_loop_us={log_us:.1f} "
        f"same_result={len(checksums) == 1} "
        f"leaked_clients={sum(leaked)} steps={args.steps} warmup={args.warmup} "
        f"rounds={args.rounds} pairs={args.pairs} world_size={args.world_size} "
        f"protocol={args.protocol} run_s={run_s:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
