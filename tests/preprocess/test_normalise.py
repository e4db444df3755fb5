"""Normalisation equals the NumPy formula, stays lazy, keeps dtypes, refuses bad input."""

import numpy as np
import pytest
import xarray as xr

from gpulab import preprocess as pp


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_zscore_and_minmax_equal_numpy(dataset, lazy, values, backend):
    ds = dataset if backend == "numpy" else lazy
    stats = pp.compute_stats(ds, progress=False)
    z = pp.normalise(ds, stats)
    m = pp.normalise(ds, stats, method="minmax")
    if backend == "dask":
        assert z.temperature.chunks == lazy.temperature.chunks  # still lazy, same chunks
    for name, v in values.items():
        v64 = v.astype(np.float64)
        assert z[name].dtype == np.float32 and m[name].dtype == np.float32
        # Against float64: within one step of float32 at the data's magnitude (the mean
        # itself is a float32 there), in z units.
        resolution = float(np.spacing(np.abs(v).max())) / v64.std()
        np.testing.assert_allclose(z[name].values, (v64 - v64.mean()) / v64.std(),
                                   atol=resolution)
        # Against NumPy doing the same in float32: equal.
        s = stats[name]
        same = (v - np.float32(s.mean)) * np.float32(1 / s.std)
        np.testing.assert_allclose(z[name].values, same, atol=1e-6)
        expected = (v64 - v64.min()) / (v64.max() - v64.min())
        np.testing.assert_allclose(m[name].values, expected, atol=1e-6)
        assert float(m[name].min()) == pytest.approx(0, abs=1e-6)
        assert float(m[name].max()) == pytest.approx(1, abs=1e-6)
        assert z[name].attrs["normalised"] == "zscore"
    np.testing.assert_array_equal(z.time, dataset.time)


def test_constant_and_integer_variables():
    ds = xr.Dataset({"flat": ("t", np.full(10, 3.0)), "count": ("t", np.arange(10))})
    stats = pp.compute_stats(ds, progress=False)
    out = pp.normalise(ds, stats)
    np.testing.assert_array_equal(out.flat.values, np.zeros(10))
    assert out["count"].dtype == np.float32
    np.testing.assert_allclose(out["count"].values, (np.arange(10) - 4.5) / np.arange(10).std(),
                               rtol=1e-6)


def test_only_chosen_variables_change(dataset):
    stats = pp.compute_stats(dataset, ["pressure"], progress=False)
    out = pp.normalise(dataset, stats)
    xr.testing.assert_identical(out.temperature, dataset.temperature)
    assert abs(float(out.pressure.mean())) < 1e-3


def test_errors_name_what_to_fix(dataset):
    stats = pp.compute_stats(dataset, ["pressure"], progress=False)
    with pytest.raises(pp.PreprocessError, match="method must be one of zscore, minmax"):
        pp.normalise(dataset, stats, method="unit")
    with pytest.raises(pp.PreprocessError, match="no statistics for variable 'temperature'"):
        pp.normalise(dataset, stats, variables=["temperature"])
    with pytest.raises(pp.PreprocessError, match="unknown variable 'wind'"):
        pp.normalise(dataset, stats, variables=["wind"])
    other = xr.Dataset({"wind": ("t", np.ones(3))})
    with pytest.raises(pp.PreprocessError, match="stats covers none of the data's variables"):
        pp.normalise(other, stats)
