"""Distributed PyTorch training on a Dask cluster: ``gpulab.training.run(train_fn, cluster)``.

>>> from gpulab import clusters, training
>>> cluster = clusters.start(workers=2)
>>> def train(ctx):                       # ctx.rank, ctx.device, ctx.log, ctx.save, ...
...     ...
>>> result = training.run(train, cluster, name="mlp", config={"lr": 0.1})

See ``launcher.run`` for the options and ``context.TrainContext`` for what ``ctx`` offers.
The launcher (and with it ``distributed``) is imported on first use: a rank process, or a
script under torchrun that only needs ``TrainContext``, doesn't pay for it.
"""

from typing import Any

from gpulab.training.context import TrainContext

__all__ = ["HyperparameterError", "Param", "RankFailed", "TrainContext", "TrainingError",
           "plan_ranks", "register", "registry", "run"]
_LAUNCHER = {"TrainingError", "plan_ranks", "run"}
_REGISTRY = {"HyperparameterError", "Param", "register"}  # training functions by name


def __getattr__(name: str) -> Any:
    if name in _LAUNCHER:
        from gpulab.training import launcher

        return getattr(launcher, name)
    if name == "RankFailed":
        from gpulab.training.pool import RankFailed

        return RankFailed
    if name in _REGISTRY:
        from gpulab.training import registry

        return getattr(registry, name)
    if name in ("registry", "examples"):  # the launcher dashboard's training functions
        import importlib

        return importlib.import_module(f"gpulab.training.{name}")
    raise AttributeError(f"module 'gpulab.training' has no attribute {name!r}")
