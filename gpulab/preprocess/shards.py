"""Each DDP rank's share of the samples, as batches of PyTorch tensors.

Every rank builds the same ``ShardedBatches`` with its own ``rank``: all ranks draw the
same permutation (same ``seed`` and epoch), cut it into ``world_size`` contiguous, equal
shares and take theirs, so shares are disjoint and together cover the samples. Equal
shares matter: DDP ranks must take the same number of steps, or the ones with more wait
forever for the others' gradients. When ``world_size`` does not divide the samples:

- ``drop_last=False`` (the default, as ``torch.utils.data.DistributedSampler``): the
  order is padded with its own first samples up to a multiple of ``world_size``, so every
  sample is seen and a few (fewer than ``world_size``) twice in the epoch;
- ``drop_last=True``: the last ``n % world_size`` samples of the order are left out of the
  epoch (different ones each epoch when shuffled), so no sample is seen twice.

Batches are loaded a few at a time (``prefetch``) in one compute each, which reads each
chunk of lazy data once per group instead of once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpulab.preprocess.errors import PreprocessError, check_dim, check_positive_int
from gpulab.preprocess.gpu import is_cupy
from gpulab.preprocess.windows import SAMPLE


def shard_indices(n: int, rank: int, world_size: int, *, shuffle: bool = False,
                  seed: int = 0, epoch: int = 0, drop_last: bool = False) -> np.ndarray:
    """The sample indices of ``rank`` for ``epoch`` (see the module's docstring)."""
    world_size = check_positive_int(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise PreprocessError(f"rank must be an integer in 0..{world_size - 1} "
                              f"(world_size={world_size}), not {rank!r}", field="rank")
    if n < 1:
        raise PreprocessError("there are no samples to shard", field="samples")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if drop_last:
        per_rank = n // world_size
        if per_rank == 0:
            raise PreprocessError(f"{n} samples are fewer than world_size={world_size} "
                                  "ranks: with drop_last=True no rank would get one; use "
                                  "drop_last=False or more samples", field="drop_last")
    else:
        per_rank = math.ceil(n / world_size)
        order = np.resize(order, per_rank * world_size)  # repeats the order from its start
    return order[rank * per_rank:(rank + 1) * per_rank]


def stack_variables(ds: Any, variables: Any = None, dim: str = "channel") -> Any:
    """One DataArray with the variables as channels, ``(sample, channel, ...)``: the
    layout a model takes in one tensor. The variables must share their dimensions."""
    from gpulab.preprocess.errors import check_variables

    names = check_variables(ds, variables)
    dims = {ds[name].dims for name in names}
    if len(dims) != 1:
        raise PreprocessError("variables to stack must have the same dimensions, not "
                              f"{sorted(dims)}; pick some with variables=", field="variables")
    stacked = ds[names].to_dataarray(dim=dim)
    first = stacked.dims[1]
    return stacked.transpose(first, dim, *stacked.dims[2:])


def to_tensor(array: Any, device: Any = None) -> Any:
    """A tensor sharing memory with a NumPy array, or on the GPU for a CuPy array."""
    import torch

    if is_cupy(array):
        tensor = torch.as_tensor(array, device="cuda")  # through __cuda_array_interface__
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if device is None else tensor.to(device)


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else rank,
                dist.get_world_size() if world_size is None else world_size)
    raise PreprocessError("pass rank= and world_size= (or call this inside an initialised "
                          "torch.distributed process group)", field="rank")


class ShardedBatches:
    """Batches of this rank's share of ``samples`` (an xarray Dataset or DataArray with a
    ``sample`` dimension, lazy or loaded) as tensors: one tensor for a DataArray, a dict
    variable -> tensor for a Dataset. Call ``set_epoch(e)`` before each epoch when
    shuffling, as with ``DistributedSampler``. Every rank gets ``len(self)`` batches of
    ``batch_size`` (the last one smaller when the share is not a multiple of it)."""

    def __init__(self, samples: Any, *, batch_size: int, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, variables: Any = None, device: Any = None,
                 prefetch: int = 8, dim: str = SAMPLE):
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.prefetch = check_positive_int(prefetch, "prefetch")
        import xarray as xr

        if isinstance(samples, xr.DataArray):
            self.n = check_dim(samples.to_dataset(name="_"), dim)
            self.names: list[str] | None = None
        else:
            self.n = check_dim(samples, dim)
            from gpulab.preprocess.errors import check_variables

            picked = check_variables(samples, variables)
            self.names = [name for name in picked if dim in samples[name].dims]
            if not self.names:
                raise PreprocessError(f"no variable has the dimension {dim!r}",
                                      field="variables")
            samples = samples[self.names]
        self.samples = samples
        self.dim, self.shuffle, self.seed, self.drop_last = dim, shuffle, seed, drop_last
        self.device = device
        self.epoch = 0
        self.indices()  # checks rank and world_size now, not at the first batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's sample indices this epoch, in the order the batches take them."""
        return shard_indices(self.n, self.rank, self.world_size, shuffle=self.shuffle,
                             seed=self.seed, epoch=self.epoch, drop_last=self.drop_last)

    def __len__(self) -> int:
        return math.ceil(len(self.indices()) / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        order = self.indices()
        group = self.batch_size * self.prefetch
        for start in range(0, len(order), group):
            wanted = order[start:start + group]
            loaded, unique = self._load(wanted)
            for b in range(0, len(wanted), self.batch_size):
                rows = np.searchsorted(unique, wanted[b:b + self.batch_size])
                yield self._batch(loaded, rows)

    def _load(self, wanted: np.ndarray) -> tuple[Any, np.ndarray]:
        import dask

        unique = np.unique(wanted)  # sorted: contiguous reads of the lazy source
        picked = self.samples.isel({self.dim: unique})
        arrays = [picked] if self.names is None else [picked[name] for name in self.names]
        # One compute for every variable: a chunk they share is read once.
        values = dask.compute(*(a.transpose(self.dim, ...).data for a in arrays))
        if self.names is None:
            return values[0], unique
        return dict(zip(self.names, values, strict=True)), unique

    def _batch(self, loaded: Any, rows: np.ndarray) -> Any:
        if self.names is None:
            return to_tensor(loaded[rows], self.device)
        return {name: to_tensor(loaded[name][rows], self.device) for name in self.names}

