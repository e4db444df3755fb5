"""Training functions the tests launch (importable by the rank processes: cloudpickle
sends them by reference to this module, which the workers can import from the repo)."""

from __future__ import annotations

import os
import time

GLOBAL_BATCH = 64
STEPS = 100
LR = 0.5


def digits():
    """scikit-learn's handwritten digits (shipped with the package), scaled, split 80/20."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def make_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10))


def batch_indices(step: int, n: int):
    """The global batch of ``step``: the same rows for one process or many."""
    import numpy as np

    return np.random.default_rng(1000 + step).choice(n, GLOBAL_BATCH, replace=False)


def train_digits(ctx, steps: int = STEPS, checkpoint_every: int = 0, die_at: int | None = None,
                 step_seconds: float = 0.0):
    """DDP training of an MLP on the digits: each rank takes its share of the global batch.
    Returns the final parameters (as numpy) and the validation accuracy."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y, vx, vy = digits()
    model = make_model()
    ddp = DDP(model) if ctx.world_size > 1 else model
    optimiser = torch.optim.SGD(ddp.parameters(), lr=LR)
    start = 0
    latest = ctx.load_latest()
    if latest is not None:
        done, state = latest  # the state after step `done`: go on with the next one
        start = done + 1
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
    share = GLOBAL_BATCH // ctx.world_size
    for step in range(start, steps):
        rows = batch_indices(step, len(x))[ctx.rank * share:(ctx.rank + 1) * share]
        xb, yb = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
        loss = torch.nn.functional.cross_entropy(ddp(xb), yb)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ctx.log(step, loss=loss.item(), samples=len(rows))
        if die_at is not None and step == die_at and ctx.attempt == 0 and ctx.rank == 1:
            os.kill(os.getppid(), 9)  # the Dask worker process running this rank dies
            time.sleep(60)
        if checkpoint_every and (step + 1) % checkpoint_every == 0:
            ctx.save({"model": model.state_dict(), "optimiser": optimiser.state_dict()}, step)
        if step_seconds:
            time.sleep(step_seconds)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(vx)).argmax(1).numpy() == vy).mean()
    return {"params": [p.detach().numpy().copy() for p in model.parameters()],
            "accuracy": float(accuracy), "rank": ctx.rank}


def quick(ctx):
    """A short job: a process group, one all-reduce, done."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(value)
    return {"sum": float(value.item()), "env": {k: os.environ[k] for k in (
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}}


def raise_on_rank_1(ctx):
    if ctx.rank == 1:
        raise ValueError("bad batch on rank 1")
    import torch
    import torch.distributed as dist

    dist.barrier()  # rank 0 waits for a peer that is gone: the launcher must end it
    return torch.zeros(1)


def hang_on_rank_0(ctx):
    if ctx.rank == 0:
        time.sleep(3600)
    return "never"
