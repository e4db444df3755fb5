"""Normalise-and-window through ``gpulab.preprocess`` on a 2-worker cluster, against the
memory-bandwidth bound: a NumPy pass that reads and writes the same bytes.

    .venv/bin/python -m bench.preprocess [--quick] [--mb MB] [--rounds R] [--workers N]

One run, one machine. The data: ``gpulab.preprocess.example_dataset`` (two float32
variables, ``(time, point)`` with 1,024 points a step, ``MB`` in all: 2,048 by default,
512 with ``--quick``), generated on the workers and held in their memory (``persist``),
so the figures are the pipeline's, not a disk's. Each round, timed from the first call to
the last byte written:

- ``gpulab``: ``compute_stats`` (one pass: every chunk read once, its count, mean, std,
  min and max) then ``windows(normalise(ds, stats), "time", 16)`` (patches of 16 steps)
  persisted on the workers and waited for: the data read twice and written once, as
  ``3 x MB`` of memory traffic;
- ``numpy``: the same traffic in one process on one array of the same bytes: ``x.sum()``
  (a read) then ``np.subtract(x, c, out=y)`` into a preallocated output (a read and a
  write), with 1 thread and with as many threads as the cluster has workers (NumPy drops
  the GIL in both). The faster of the two is the bound. ``numpy fresh output`` (1 thread)
  writes into newly allocated memory instead, as the pipeline's output is: the difference
  is the kernel's cost of handing out fresh pages (reported, not the bound).

NumPy rounds run before and after the cluster's (their arrays and the cluster's data are
not in memory at once), and the median of each is kept. The last line is ``key=value``:
``bandwidth_fraction`` = bound seconds / gpulab seconds, medians (goal, issue #8:
>= 0.5); ``best_round_fraction`` the same from each side's fastest round (what a machine
nobody else uses would show); ``fraction_vs_1thread`` and ``fraction_vs_fresh_output``
against those NumPy rows alone; the effective GB/s of each, and the stages' seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

POINTS = 1024
WINDOW = 16
VARIABLES = ("temperature", "pressure")


def _numpy_pass(x: np.ndarray, y: np.ndarray, threads: int) -> float:
    """Seconds for a read of ``x`` then a read of ``x`` and a write of ``y``."""
    parts = np.array_split(np.arange(x.shape[0]), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts if len(p)]

    def read(b):
        return float(x[b[0]:b[1]].sum())

    def read_write(b, centre):
        np.subtract(x[b[0]:b[1]], centre, out=y[b[0]:b[1]])

    t0 = time.perf_counter()
    if threads == 1:
        centre = np.float32(read((0, x.shape[0])) / x.size)
        read_write((0, x.shape[0]), centre)
    else:
        with ThreadPoolExecutor(threads) as pool:
            centre = np.float32(sum(pool.map(read, bounds)) / x.size)
            list(pool.map(lambda b: read_write(b, centre), bounds))
    return time.perf_counter() - t0


def _numpy_fresh_output(x: np.ndarray) -> float:
    """The same pass writing into new memory, as a pipeline's output is: page faults
    included."""
    t0 = time.perf_counter()
    centre = np.float32(float(x.sum()) / x.size)
    y = np.subtract(x, centre)
    elapsed = time.perf_counter() - t0
    del y
    return elapsed


def _numpy_rounds(total_bytes: int, rounds: int, workers: int) -> dict[str, list[float]]:
    steps = total_bytes // (4 * POINTS)
    x = np.random.default_rng(0).standard_normal((steps, POINTS), dtype=np.float32)
    y = np.ones_like(x)  # touched: its pages exist before the clock starts
    times: dict[str, list[float]] = {"numpy 1 thread": [], f"numpy {workers} threads": [],
                                     "numpy fresh output": []}
    for _ in range(rounds):
        times["numpy 1 thread"].append(_numpy_pass(x, y, 1))
        times[f"numpy {workers} threads"].append(_numpy_pass(x, y, workers))
        times["numpy fresh output"].append(_numpy_fresh_output(x))
    return times


def _gpulab_round(ds) -> tuple[float, float, float]:
    from distributed import wait

    from gpulab import preprocess as pp

    t0 = time.perf_counter()
    stats = pp.compute_stats(ds, progress=False)
    t1 = time.perf_counter()
    samples = pp.windows(pp.normalise(ds, stats), "time", WINDOW).persist()
    wait([samples[name].data for name in VARIABLES])
    t2 = time.perf_counter()
    del samples
    return t2 - t0, t1 - t0, t2 - t1


def _gpulab_rounds(total_bytes: int, rounds: int, workers: int) -> dict[str, list[float]]:
    from distributed import wait

    from gpulab import clusters
    from gpulab import preprocess as pp

    registry = clusters.Registry(tempfile.mkdtemp(prefix="gpulab-bench-preprocess-"))
    cluster = clusters.start(workers=workers, threads_per_worker=1, registry=registry,
                             quota=None, progress=False)
    client = cluster.client()
    try:
        steps = total_bytes // (4 * POINTS * len(VARIABLES))
        ds = pp.example_dataset(steps, POINTS, variables=VARIABLES).persist()
        wait([ds[name].data for name in VARIABLES])
        chunks = len(ds[VARIABLES[0]].data.chunks[0]) * len(VARIABLES)
        print(f"generated {total_bytes / 2**20:.0f} MiB on {workers} workers "
              f"({chunks} chunks of {ds[VARIABLES[0]].data.nbytes / 2**20 / chunks * 2:.0f} "
              "MiB)", file=sys.stderr)
        # Warm-up: imports and first-use caches on the workers, not measured.
        _gpulab_round(ds.isel(time=slice(0, 4096)))
        times: dict[str, list[float]] = {"gpulab": [], "gpulab stats": [],
                                         "gpulab normalise+window": []}
        for r in range(rounds):
            whole, stats_s, window_s = _gpulab_round(ds)
            times["gpulab"].append(whole)
            times["gpulab stats"].append(stats_s)
            times["gpulab normalise+window"].append(window_s)
            print(f"round {r + 1}/{rounds} gpulab {whole:.3f} s (stats {stats_s:.3f} s, "
                  f"normalise+window {window_s:.3f} s)", file=sys.stderr)
    finally:
        client.close()
        cluster.stop()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 MiB (under a minute)")
    parser.add_argument("--mb", type=int, default=None, help="dataset size in MiB")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    total = (args.mb or (512 if args.quick else 2048)) * 2**20
    rounds = args.rounds or (3 if args.quick else 5)
    started = time.perf_counter()

    before = _numpy_rounds(total, rounds, args.workers)
    ours = _gpulab_rounds(total, rounds, args.workers)
    after = _numpy_rounds(total, rounds, args.workers)
    times = {k: before[k] + after[k] for k in before} | ours

    traffic = 3 * total  # read for the statistics, read and write for the samples
    print(f"\n{'kind':<26}{'MiB':>7}{'rounds':>8}{'median s':>10}{'min s':>8}{'GB/s':>8}")
    med = {}
    for kind, values in times.items():
        med[kind] = statistics.median(values)
        moved = traffic if kind == "gpulab" or kind.startswith("numpy") else None
        rate = f"{moved / med[kind] / 1e9:>8.2f}" if moved else f"{'':>8}"
        print(f"{kind:<26}{total / 2**20:>7.0f}{len(values):>8}{med[kind]:>10.3f}"
              f"{min(values):>8.3f}{rate}")
    threads = f"numpy {args.workers} threads"
    bound = min(med["numpy 1 thread"], med[threads])
    best_bound = min(min(times["numpy 1 thread"]), min(times[threads]))
    print(
        f"\nmb={total // 2**20} workers={args.workers} rounds={rounds} "
        f"gpulab_s={med['gpulab']:.3f} numpy_s={bound:.3f} "
        f"numpy_1thread_s={med['numpy 1 thread']:.3f} "
        f"numpy_{args.workers}threads_s={med[threads]:.3f} "
        f"stats_s={med['gpulab stats']:.3f} "
        f"normalise_window_s={med['gpulab normalise+window']:.3f} "
        f"gpulab_gb_s={traffic / med['gpulab'] / 1e9:.2f} numpy_gb_s={traffic / bound / 1e9:.2f} "
        f"numpy_fresh_output_s={med['numpy fresh output']:.3f} "
        f"run_s={time.perf_counter() - started:.0f} "
        f"best_round_fraction={best_bound / min(times['gpulab']):.3f} "
        f"fraction_vs_1thread={med['numpy 1 thread'] / med['gpulab']:.3f} "
        f"fraction_vs_fresh_output={med['numpy fresh output'] / med['gpulab']:.3f} "
        f"bandwidth_fraction={bound / med['gpulab']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
