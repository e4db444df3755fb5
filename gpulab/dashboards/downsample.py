"""Server-side downsampling for the dashboards: LTTB and an exponential moving average.

``lttb(x, y, threshold)`` keeps at most ``threshold`` points of a series, chosen by
largest-triangle-three-buckets (Steinarsson, 2013): the first and last points, and in each
of ``threshold - 2`` equal buckets the point that makes the largest triangle with the point
kept before it and the mean of the next bucket, so spikes and dips survive. One pass of
``threshold`` numpy slices over the data: O(n). Non-finite points (NaN, inf: a diverging
loss) can't be drawn and are left out before downsampling.

``smooth(values, alpha)`` is TensorBoard's smoothing: ``y[i] = alpha*y[i-1] + (1-alpha)*x[i]``
over the finite values (others stay as they are), in numpy blocks rather than a Python loop.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_THRESHOLD = 1000


def lttb_indices(x, y, threshold: int) -> np.ndarray:
    """Indices (increasing) of at most ``threshold`` points of the finite ones to keep."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y are 1-d arrays of one length, not {x.shape} and {y.shape}")
    if threshold < 1:
        raise ValueError(f"threshold is at least 1, not {threshold!r}")
    finite = np.isfinite(x) & np.isfinite(y)
    index = np.arange(len(x)) if finite.all() else np.flatnonzero(finite)
    n = len(index)
    if n <= threshold:
        return index
    if threshold < 3:
        return index[[0, n - 1][:threshold]]
    xs, ys = x[index], y[index]
    buckets = threshold - 2
    # Interior points 1..n-2 in `buckets` buckets; bucket i is edges[i]:edges[i+1].
    edges = np.floor(np.linspace(1, n - 1, buckets + 1)).astype(np.intp)
    counts = np.diff(edges)
    mean_x = np.add.reduceat(xs[1:n - 1], edges[:-1] - 1) / counts
    mean_y = np.add.reduceat(ys[1:n - 1], edges[:-1] - 1) / counts
    # The "next bucket" of the last bucket is the last point.
    mean_x = np.append(mean_x[1:], xs[n - 1])
    mean_y = np.append(mean_y[1:], ys[n - 1])
    kept = np.empty(threshold, dtype=np.intp)
    kept[0], kept[-1] = 0, n - 1
    a = 0
    for i in range(buckets):
        lo, hi = edges[i], edges[i + 1]
        ax, ay, cx, cy = xs[a], ys[a], mean_x[i], mean_y[i]
        area = np.abs((ax - cx) * (ys[lo:hi] - ay) - (ax - xs[lo:hi]) * (cy - ay))
        a = lo + int(np.argmax(area))
        kept[i + 1] = a
    return index[kept]


def lttb(x, y, threshold: int = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` downsampled to at most ``threshold`` points (the input's finite points
    unchanged when there are no more than that)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = lttb_indices(x, y, threshold)
    return x[keep], y[keep]


def smooth(values, alpha: float) -> np.ndarray:
    """Exponential moving average with weight ``alpha`` in [0, 1) on the previous value
    (0: unchanged). Non-finite values are skipped and kept as they are."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha is in [0, 1), not {alpha!r}")
    values = np.array(values, dtype=float)
    if alpha == 0 or values.size == 0:
        return values
    finite = np.isfinite(values)
    x = values[finite]
    if x.size == 0:
        return values
    terms = int(math.log(1e-17) / math.log(alpha)) + 1
    if terms <= 256:
        # A short memory: y is x convolved with (1-a) a^k, k < terms (the rest is below
        # double precision), plus what is left of the start value, a^(i+1) x[0].
        kernel = (1 - alpha) * alpha ** np.arange(terms)
        y = np.convolve(x, kernel)[:x.size]
        y += x[0] * alpha ** np.minimum(np.arange(1, x.size + 1), terms + 1)
        values[finite] = y
        return values
    y = np.empty_like(x)
    # Within a block, y[i] = a^(i+1) y[-1] + (1-a) sum_j a^(i-j) x[j]: a cumulative sum of
    # x[j] a^-j, with blocks short enough that a^-j stays within 1e8 (precision).
    block = max(1, int(math.log(1e-8) / math.log(alpha)))
    powers = alpha ** np.arange(1, block + 1)  # a^(i+1)
    inverse = alpha ** -np.arange(block)  # a^-j
    previous = x[0]
    for start in range(0, x.size, block):
        chunk = x[start:start + block]
        k = chunk.size
        acc = np.cumsum(chunk * inverse[:k]) * (powers[:k] / alpha)
        y[start:start + k] = powers[:k] * previous + (1 - alpha) * acc
        previous = y[start + k - 1]
    values[finite] = y
    return values
