"""Preprocessing with xarray + Dask before training: open, normalise, window, split,
and feed each DDP rank its share as PyTorch tensors; CuPy-backed on GPUs, the same code
on CPUs.

>>> from gpulab import preprocess as pp
>>> ds = pp.open_dataset("data.zarr", dim="time")           # lazy, 64 MiB chunks
>>> parts = pp.split(ds, "time", (0.8, 0.1, 0.1), window=24)  # no window crosses a split
>>> stats = pp.compute_stats(parts["train"])                # one pass, progress shown
>>> train = pp.windows(pp.normalise(parts["train"], stats), "time", size=24, stride=6)
>>> batches = pp.ShardedBatches(pp.stack_variables(train), batch_size=64,
...                             rank=rank, world_size=world_size, shuffle=True)
>>> for epoch in range(epochs):
...     batches.set_epoch(epoch)
...     for x in batches: ...                              # x: tensor (64, channels, 24, ...)

With a ``distributed`` client current (``gpulab.clusters.start(...).client()``) the
computations run on the cluster; ``as_cupy`` moves the data to the GPU where there is one.
Bad arguments raise ``PreprocessError`` naming the argument. See docs/preprocess.md.
"""

from gpulab.preprocess.errors import PreprocessError
from gpulab.preprocess.example import example_dataset
from gpulab.preprocess.gpu import as_cupy, gpu_available, to_numpy
from gpulab.preprocess.normalise import normalise
from gpulab.preprocess.opening import open_dataset
from gpulab.preprocess.progress import compute
from gpulab.preprocess.shards import ShardedBatches, shard_indices, stack_variables, to_tensor
from gpulab.preprocess.splits import split, split_bounds
from gpulab.preprocess.stats import Stats, VariableStats, compute_stats
from gpulab.preprocess.windows import window_count, windows

__all__ = [
    "PreprocessError",
    "ShardedBatches",
    "Stats",
    "VariableStats",
    "as_cupy",
    "compute",
    "compute_stats",
    "example_dataset",
    "gpu_available",
    "normalise",
    "open_dataset",
    "shard_indices",
    "split",
    "split_bounds",
    "stack_variables",
    "to_numpy",
    "to_tensor",
    "window_count",
    "windows",
]
