"""``bench.ddp``'s torchrun side: ``bench.ddp_workload.train`` in a script torchrun starts.

    torchrun --standalone --nproc_per_node=2 -m bench.ddp_torchrun_script OUT STEPS WARMUP

The process group comes from torchrun's environment (gloo on CPU); the context is a tiny
adapter with what the workload reads (rank, world size; nothing is logged), not
``gpulab.training.TrainContext.from_env()``: importing ``gpulab.training`` imports
``distributed`` too, which would charge torchrun's launch for gpulab's imports. Rank 0
writes the workload's result as JSON to ``OUT``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass


@dataclass
class Context:
    """What ``bench.ddp_workload.train`` reads of a ``TrainContext``, from torchrun's env."""

    rank: int
    world_size: int

    @classmethod
    def from_env(cls) -> Context:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def log(self, step: int, **metrics: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    out, steps, warmup = (sys.argv[1:] if argv is None else argv)[:3]
    import torch.distributed as dist

    from bench.ddp_workload import train

    ctx = Context.from_env()
    dist.init_process_group("gloo")
    try:
        result = train(ctx, steps=int(steps), warmup=int(warmup), log=False)
    finally:
        dist.destroy_process_group()
    if ctx.rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
