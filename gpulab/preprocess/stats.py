"""Per-variable statistics (count, mean, std, min, max) in one pass over the data.

Each chunk is reduced where it lies (on its Dask worker, on its GPU with CuPy) to five
numbers, in cache-sized pieces so the chunk leaves memory once; the pieces and then the
chunks are merged with Chan et al.'s pairwise update, which keeps the variance accurate
where the textbook ``E[x^2] - E[x]^2`` loses digits. Every variable's reductions go into
one ``dask.compute``, so a chunk that several variables share (one Zarr read, one
generated block) is read once. NaNs are missing values: left out of every statistic.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gpulab.preprocess.errors import PreprocessError, check_variables
from gpulab.preprocess.gpu import is_cupy
from gpulab.preprocess.progress import compute

# Elements per piece: 256 Ki float32 values are 1 MiB; the piece and its centred copy stay
# in a core's L2/L3 cache, so the sum, the centred squares, min and max of a piece cost
# one trip to memory. Smaller pieces pay more Python per byte (measured: 1 MiB pieces
# 13 ms per 64 MiB chunk, 128 KiB pieces 20 ms, whole-chunk passes several times more).
PIECE = 1 << 18

# (count, mean, M2 = sum of squared deviations, min, max)
Moments = tuple[int, float, float, float, float]
EMPTY: Moments = (0, 0.0, 0.0, math.inf, -math.inf)


@dataclass(frozen=True)
class VariableStats:
    """One variable's statistics; ``std`` is the population standard deviation (ddof=0,
    NumPy's default), ``count`` the values that are not NaN."""

    count: int
    mean: float
    std: float
    min: float
    max: float


class Stats(dict):
    """Variable name -> ``VariableStats``; saves as JSON next to a model, so inference
    normalises with the statistics training used."""

    def to_json(self) -> str:
        return json.dumps({name: asdict(s) for name, s in self.items()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Stats:
        return cls({name: VariableStats(**values) for name, values in json.loads(text).items()})


def merge(a: Moments, b: Moments) -> Moments:
    """Chan, Golub and LeVeque's pairwise combination of two partial results."""
    na, ma, m2a, lo_a, hi_a = a
    nb, mb, m2b, lo_b, hi_b = b
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = mb - ma
    return (n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n,
            min(lo_a, lo_b), max(hi_a, hi_b))


def chunk_moments(block: Any) -> Moments:
    """The moments of one chunk (NumPy or CuPy), NaNs left out."""
    flat = block.reshape(-1)
    # On a GPU the whole chunk is one piece: its bandwidth needs no cache blocking, and
    # each piece costs a device-to-host sync.
    piece = flat.size if is_cupy(flat) else PIECE
    # Floats are summed in their own type (NumPy's pairwise sum keeps float32 within about
    # 1e-7 of float64 here, at a third of the time of casting each value); integers in
    # float64.
    work = flat.dtype if np.issubdtype(flat.dtype, np.floating) else np.dtype(np.float64)
    # One scratch buffer for the centred values of every piece: allocating one per piece
    # costs a fresh mmap and its page faults each time in a Dask worker (distributed sets
    # MALLOC_TRIM_THRESHOLD_, which stops glibc from keeping such blocks), 5x the work.
    scratch = None
    acc = EMPTY
    for start in range(0, flat.size, max(piece, 1)):
        part = flat[start:start + piece]
        total = float(part.sum(dtype=work))
        if total != total:  # NaN somewhere in this piece: leave the missing values out
            part = part[~np.isnan(part)]
            if part.size == 0:
                continue
            total = float(part.sum(dtype=work))
        n = int(part.size)
        mean = total / n
        if part.dtype == work and part.size == min(piece, flat.size):
            if scratch is None:
                scratch = np.empty_like(part)  # dispatches to CuPy for a CuPy part
            centred = np.subtract(part, work.type(mean), out=scratch)
        else:  # integers, the last piece, or a piece with NaNs left out
            centred = (part - work.type(mean)).astype(work, copy=False)
        # np.dot, not `@`: for 1-D arrays it is BLAS's dot, `@` a much slower loop.
        acc = merge(acc, (n, mean, float(np.dot(centred, centred)), float(part.min()),
                          float(part.max())))
    return acc


def merge_all(parts: list[Moments]) -> Moments:
    acc = EMPTY
    for part in parts:
        acc = merge(acc, part)
    return acc


def moments_graph(data: Any) -> Any:
    """A Delayed for the moments of ``data`` (a Dask, NumPy or CuPy array)."""
    import dask
    import dask.array as da

    if not isinstance(data, da.Array):
        data = da.asarray(data)
    # optimize_graph=False keeps the chunks' own keys: optimised, each variable's graph
    # would fuse its own copy of the read into its tasks, and a source that two variables
    # share would be read twice.
    chunks = data.to_delayed(optimize_graph=False).ravel()
    parts = [dask.delayed(chunk_moments, pure=True)(c) for c in chunks]
    return dask.delayed(merge_all, pure=True)(parts)


def compute_stats(ds: Any, variables: Any = None, *, progress: bool | None = None) -> Stats:
    """Count, mean, std, min and max of each data variable of ``ds`` (an xarray Dataset,
    lazy or loaded) over all its values, in one ``dask.compute``: the data is read once.

    ``variables`` picks some (all by default). Compute them on the training split only and
    apply them to every split (``normalise``), so validation data does not leak into the
    model through its statistics."""
    names = check_variables(ds, variables)
    graphs = [moments_graph(ds[name].data) for name in names]
    label = f"statistics of {', '.join(names)}"
    results = compute(*graphs, label=label, progress=progress)
    stats = Stats()
    for name, (n, mean, m2, lo, hi) in zip(names, results, strict=True):
        if n == 0:
            raise PreprocessError(f"variable {name!r} has no values that are not NaN: drop "
                                  "it from variables", field="variables")
        stats[name] = VariableStats(count=n, mean=mean, std=math.sqrt(m2 / n), min=lo, max=hi)
    return stats
