"""Train / validation / test splits that no window crosses.

Windows drawn from neighbouring steps share steps: split sample-by-sample and a validation
sample overlaps the training samples around it, and the model has seen its data. Here the
dimension is cut into contiguous blocks in the order given, with a gap of ``window - 1``
steps between blocks: the steps a window starting at a block's last step would borrow
from the next block. So a window inside one block shares no step with a window inside
another, and even a window cut from the whole series and assigned to the block of its
first step reaches no other block (at most into the gap). The gap also buffers
short-range correlation between the end of one split and the start of the next. Window
each block (``windows``) after splitting.
"""

from __future__ import annotations

import math
from typing import Any

from gpulab.preprocess.errors import PreprocessError, check_dim, check_positive_int

DEFAULT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
NAMES = ("train", "validation", "test")


def _fractions(fractions: Any) -> dict[str, float]:
    if isinstance(fractions, dict):
        parts = dict(fractions)
    else:
        values = list(fractions)
        if not 1 <= len(values) <= 3:
            raise PreprocessError("fractions must be a dict of name -> fraction or 1 to 3 "
                                  f"numbers (train, validation, test), not {fractions!r}",
                                  field="fractions")
        parts = dict(zip(NAMES, values, strict=False))  # 1 to 3 values
    for name, value in parts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise PreprocessError(f"fraction of {name!r} must be a number > 0, not {value!r}",
                                  field="fractions")
    total = sum(parts.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise PreprocessError(f"fractions must sum to 1, not {total:g} ({parts})",
                              field="fractions")
    return parts


def split_bounds(length: int, fractions: Any = None, *, window: int = 1) -> dict[str, range]:
    """Name -> the range of steps of each split: contiguous, in order, ``window - 1``
    steps apart; the steps that rounding leaves over go to the first split."""
    parts = _fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    window = check_positive_int(window, "window")
    gap = window - 1
    usable = length - gap * (len(parts) - 1)
    sizes = {name: int(usable * f) if usable > 0 else 0 for name, f in parts.items()}
    first = next(iter(sizes))
    sizes[first] += max(usable, 0) - sum(sizes.values())
    bounds, start = {}, 0
    for name, size in sizes.items():
        if size < window:
            raise PreprocessError(
                f"split {name!r} gets {size} steps, fewer than one window of {window}: "
                f"{length} steps are too few for fractions {parts} with window={window}; "
                "use more data, a shorter window or larger fractions", field="fractions")
        bounds[name] = range(start, start + size)
        start += size + gap
    return bounds


def split(ds: Any, dim: str, fractions: Any = None, *, window: int = 1) -> dict[str, Any]:
    """Name -> ``ds`` cut to that split's steps along ``dim`` (lazy slices, nothing is
    read). ``fractions``: a dict ``{"train": 0.8, "validation": 0.2}`` or up to three
    numbers for train, validation, test; default 0.7 / 0.15 / 0.15."""
    length = check_dim(ds, dim)
    bounds = split_bounds(length, fractions, window=window)
    return {name: ds.isel({dim: slice(r.start, r.stop)}) for name, r in bounds.items()}
