"""The training function ``bench.ddp`` launches under torchrun and under gpulab alike.

A small MLP on scikit-learn's digits (1,797 images of 8x8 pixels, 10 classes), trained with
DistributedDataParallel: each rank takes its share of a global batch drawn from a seeded
generator, so both launchers compute exactly the same steps (the final parameters'
checksum must match). Without scikit-learn a stand-in of the same shape is generated with
numpy (``DATA`` says which ran).

``train(ctx, steps=..., warmup=..., log=...)`` expects the process group to be up (gloo);
it returns, on every rank, wall-clock timestamps (``time.time()``, comparable across the
processes of one machine) and the steady-state rate:

- ``t_process``: this rank's process started; ``t_imported``: this module was imported (a
  fresh process has torch imported by then); ``t_enter``: the function was entered;
  ``t_first_step``: the first optimiser step is done;
- ``loop_s``: seconds for steps ``warmup+1 .. steps`` (the steady state), and
  ``samples_per_s`` = global samples in them / ``loop_s``; ``step_median_s``: the median
  step of those (less moved by other load on the machine, but blind to rare costs);
- with ``log=True``, ``ctx.log(step, loss=..., samples=...)`` every step (the loss is read
  with ``.item()`` in both modes, so the difference is the logger alone), and ``log_s``:
  the time spent inside those calls in the steady state (two clock reads a step more).
"""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any

IMPORTED = time.time()  # in a fresh rank process: torch is imported by now, on both sides

FEATURES = 64
CLASSES = 10
HIDDEN = 128
BATCH_PER_RANK = 64
LR = 0.05
SEED = 0


def _has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


DATA = "sklearn digits" if _has_sklearn() else "numpy stand-in for digits (no scikit-learn)"


def digits() -> tuple[Any, Any]:
    """``(x, y)``: float32 pixels in [0, 1] and int64 labels, 1,797 rows."""
    import numpy as np

    if _has_sklearn():
        from sklearn.datasets import load_digits

        data = load_digits()
        return (data.data / 16.0).astype("float32"), data.target.astype("int64")
    # Same shape and value grid as the digits: a prototype per class plus noise,
    # quantised to 17 grey levels. Learnable, deterministic.
    rng = np.random.default_rng(1797)
    prototypes = rng.random((CLASSES, FEATURES))
    y = rng.integers(0, CLASSES, 1797)
    x = np.clip(prototypes[y] + rng.normal(0.0, 0.25, (1797, FEATURES)), 0.0, 1.0)
    return (np.round(x * 16.0) / 16.0).astype("float32"), y.astype("int64")


def _process_started() -> float:
    """When this process started, as ``time.time()`` (Linux, 10 ms resolution; NaN
    elsewhere). Its age from /proc against the boot clock: psutil's ``create_time`` adds
    the boot time in whole seconds, up to a second off."""
    import os

    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return float("nan")
    return time.time() - age


def make_model() -> Any:
    import torch

    torch.manual_seed(SEED)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    )


def train(ctx: Any, steps: int = 400, warmup: int = 20, log: bool = False) -> dict[str, Any]:
    """DDP steps on the digits; timestamps and rates (see the module's docstring)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    t_enter = time.time()
    x_all, y_all = digits()
    x_all, y_all = torch.from_numpy(x_all), torch.from_numpy(y_all)
    model = make_model()
    ddp = DDP(model) if ctx.world_size > 1 else model
    optimiser = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=0.9)
    world, rank = ctx.world_size, ctx.rank
    global_batch = BATCH_PER_RANK * world
    generator = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(x_all), generator=generator)
    at = 0
    t_first_step = 0.0
    loss_value = float("nan")
    ends = []  # perf_counter at the end of each steady-state step
    log_s = 0.0  # time inside ctx.log in those steps
    for step in range(1, steps + 1):
        if at + global_batch > len(order):
            order, at = torch.randperm(len(x_all), generator=generator), 0
        rows = order[at + rank * BATCH_PER_RANK: at + (rank + 1) * BATCH_PER_RANK]
        at += global_batch
        loss = torch.nn.functional.cross_entropy(ddp(x_all[rows]), y_all[rows])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        loss_value = loss.item()
        if log:
            before = time.perf_counter()
            ctx.log(step, loss=loss_value, samples=global_batch)
            if step > warmup:
                log_s += time.perf_counter() - before
        if step == 1:
            t_first_step = time.time()
        if step >= warmup:
            ends.append(time.perf_counter())
    loop_s = ends[-1] - ends[0]
    gaps = sorted(b - a for a, b in pairwise(ends))
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
        accuracy = float((model(x_all).argmax(1) == y_all).double().mean())
    return {
        "rank": rank, "world_size": world, "t_process": _process_started(),
        "t_imported": IMPORTED, "t_enter": t_enter, "t_first_step": t_first_step,
        "loop_s": loop_s, "steady_steps": steps - warmup,
        "samples_per_s": (steps - warmup) * global_batch / loop_s,
        "step_median_s": gaps[len(gaps) // 2], "log_s": log_s,
        "loss": loss_value, "accuracy": accuracy, "checksum": checksum,
        "threads": torch.get_num_threads(), "data": DATA,
    }
