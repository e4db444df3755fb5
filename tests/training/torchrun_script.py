"""The run logger outside Dask: `torchrun --nproc_per_node=2 torchrun_script.py RUN_URL`.

Each rank logs 20 steps of a tiny DDP job through TrainContext.from_env; rank 0
checkpoints at the end."""

import sys

import torch
import torch.distributed as dist

from gpulab.training import TrainContext


def main(run_url: str) -> None:
    dist.init_process_group("gloo")
    ctx = TrainContext.from_env(run_url)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(20):
        loss = model(torch.ones(8, 4)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ctx.log(step, loss=loss.item(), world=ctx.world_size)
    ctx.save({"model": model.module.state_dict()}, 19)
    ctx.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
