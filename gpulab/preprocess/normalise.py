"""Per-variable normalisation with statistics from ``compute_stats``.

``zscore``: (x - mean) / std; ``minmax``: (x - min) / (max - min), into [0, 1]. The result
stays lazy (when the graph runs: one subtract-and-scale per chunk, into one new array) and keeps
floating dtypes (float32 stays float32: half the bytes of float64 to move, and what models
train on); integer variables become float32. A constant variable (std or range 0) is only
shifted, so it becomes zeros rather than NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpulab.preprocess.errors import PreprocessError, check_variables
from gpulab.preprocess.stats import Stats

METHODS = ("zscore", "minmax")


def centre_and_scale(stats: Stats, name: str, method: str) -> tuple[float, float]:
    """(c, a) with normalised = (x - c) * a."""
    s = stats[name]
    if method == "zscore":
        centre, spread = s.mean, s.std
    else:
        centre, spread = s.min, s.max - s.min
    return centre, (1.0 / spread if spread > 0 else 1.0)


def affine(block: Any, centre: float, scale: float, dtype: Any) -> Any:
    """``(block - centre) * scale`` into one new array of ``dtype`` (NumPy or CuPy): one
    write of the output, where the plain expression writes a temporary too. Subtracting
    first keeps float32 exact where ``x * a + b`` would cancel digits (x near 1000, small
    spread)."""
    out = np.subtract(block, dtype.type(centre), dtype=dtype)
    np.multiply(out, dtype.type(scale), out=out)
    return out


def normalise(ds: Any, stats: Stats, *, method: str = "zscore", variables: Any = None) -> Any:
    """``ds`` with each chosen variable (all that ``stats`` covers, by default) normalised;
    other variables and coordinates pass through unchanged."""
    if method not in METHODS:
        raise PreprocessError(f"method must be one of {', '.join(METHODS)}, not {method!r}",
                              field="method")
    if variables is None:
        variables = [name for name in ds.data_vars if name in stats]
        if not variables:
            raise PreprocessError("stats covers none of the data's variables "
                                  f"({', '.join(map(repr, ds.data_vars))}): compute them with "
                                  "compute_stats on this data", field="stats")
    names = check_variables(ds, variables)
    missing = [name for name in names if name not in stats]
    if missing:
        raise PreprocessError(f"no statistics for variable {missing[0]!r}: include it in "
                              "compute_stats(..., variables=...)", field="stats")
    out = ds.copy()
    for name in names:
        var = ds[name]
        dtype = var.dtype if np.issubdtype(var.dtype, np.floating) else np.dtype(np.float32)
        centre, scale = centre_and_scale(stats, name, method)
        data = var.data
        if hasattr(data, "map_blocks"):  # Dask: the same function on each chunk, lazily
            data = data.map_blocks(affine, centre, scale, dtype, dtype=dtype)
        else:
            data = affine(data, centre, scale, dtype)
        out[name] = var.copy(data=data).assign_attrs(normalised=method)
    return out
