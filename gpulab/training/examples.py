"""Built-in training functions, registered by name for the launcher dashboard.

- ``digits-mlp``: scikit-learn's handwritten digits (shipped with the package: no download),
  a small MLP, DistributedDataParallel across the ranks; logs ``loss``, ``accuracy`` (of
  the step's batch) and ``samples`` every step and ``val_accuracy`` at the end. At its
  default size it finishes in a few seconds on CPU workers.

Each is a plain ``fn(ctx, **hyperparameters)``: call it yourself with ``training.run``
(``training.run(functools.partial(digits_mlp, steps=50), cluster)``), or pick it in the
launcher.
"""

from __future__ import annotations

from typing import Any

from gpulab.training.registry import Param, register


def _digits(seed: int) -> tuple[Any, Any, Any, Any]:
    """The digits scaled to [0, 1], shuffled with ``seed``, split 80/20."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def digits_mlp(ctx: Any, steps: int = 60, lr: float = 0.5, hidden: int = 64,
               batch_size: int = 64, optimiser: str = "sgd", seed: int = 0) -> dict[str, Any]:
    """A small MLP on scikit-learn's digits, data-parallel across the ranks.

    Every rank draws the same global batch of ``batch_size`` rows per step and trains on
    its share, so one rank or many learn the same thing; resumes from the latest checkpoint
    (saved every 20 steps) after a restart.
    """
    import numpy as np
    import torch
    from torch.nn.parallel import DistributedDataParallel

    x, y, vx, vy = _digits(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, 10)).to(ctx.device)
    ddp = DistributedDataParallel(model) if ctx.world_size > 1 else model
    make = torch.optim.Adam if optimiser == "adam" else torch.optim.SGD
    optim = make(ddp.parameters(), lr=lr)
    start = 0
    latest = ctx.load_latest()
    if latest is not None:
        done, state = latest
        start = done + 1
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimiser"])
    share = max(1, batch_size // ctx.world_size)
    for step in range(start, steps):
        rows = np.random.default_rng(seed * 100_003 + step).choice(
            len(x), share * ctx.world_size, replace=False)[ctx.rank * share:(ctx.rank + 1) * share]
        xb = torch.from_numpy(x[rows]).to(ctx.device)
        yb = torch.from_numpy(y[rows]).to(ctx.device)
        out = ddp(xb)
        loss = torch.nn.functional.cross_entropy(out, yb)
        optim.zero_grad()
        loss.backward()
        optim.step()
        accuracy = (out.argmax(1) == yb).float().mean().item()
        ctx.log(step, loss=loss.item(), accuracy=accuracy, samples=len(rows))
        if (step + 1) % 20 == 0:
            ctx.save({"model": model.state_dict(), "optimiser": optim.state_dict()}, step)
    with torch.no_grad():
        predicted = model(torch.from_numpy(vx).to(ctx.device)).argmax(1).cpu().numpy()
    val_accuracy = float((predicted == vy).mean())
    ctx.log(max(steps - 1, 0), val_accuracy=val_accuracy)
    return {"val_accuracy": val_accuracy, "rank": ctx.rank}


register("digits-mlp", digits_mlp, params={
    "steps": Param(60, bounds=(1, 100_000), help="optimiser steps"),
    "lr": Param(0.5, bounds=(1e-6, 10.0), help="learning rate"),
    "hidden": Param(64, bounds=(1, 4096), help="hidden units"),
    "batch_size": Param(64, bounds=(1, 1437), help="global batch (rows per step, all ranks)"),
    "optimiser": Param("sgd", choices=("sgd", "adam")),
    "seed": Param(0, bounds=(0, 2**31 - 1), help="data order and initial weights"),
})
