"""Fixtures for the preprocessing tests.

- ``values``: a generated float32 array (time, point) with offsets, as NumPy;
- ``dataset``: the same as an xarray Dataset of two variables, NumPy-backed;
- ``lazy``: the same chunked with Dask (chunks of 37 steps: not a multiple of any window);
- ``CountingArray``: an array that counts its reads, to see how often a graph reads data.
"""

import threading

import numpy as np
import pytest
import xarray as xr

STEPS, POINTS = 300, 7


@pytest.fixture
def values():
    rng = np.random.default_rng(42)
    temperature = (rng.standard_normal((STEPS, POINTS)) * 3 + 15).astype(np.float32)
    pressure = (rng.standard_normal((STEPS, POINTS)) * 5 + 1000).astype(np.float32)
    return {"temperature": temperature, "pressure": pressure}


def make_dataset(values):
    return xr.Dataset(
        {name: (("time", "point"), v) for name, v in values.items()},
        coords={"time": np.arange(100, 100 + STEPS), "point": np.arange(POINTS)},
    )


@pytest.fixture
def dataset(values):
    return make_dataset(values)


@pytest.fixture
def lazy(dataset):
    return dataset.chunk({"time": 37})


class CountingArray:
    """Array-like whose every read (``__getitem__``) is counted."""

    def __init__(self, values):
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim
        self.reads = 0
        self._lock = threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            self.reads += 1
        return self.values[key]
