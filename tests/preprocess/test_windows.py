"""Windows equal a plain NumPy loop, for overlapping, patching and spaced strides."""

import numpy as np
import pytest
import xarray as xr

from gpulab import preprocess as pp


def _reference(v, size, stride):
    starts = range(0, v.shape[0] - size + 1, stride)
    return np.stack([v[s:s + size] for s in starts])


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize(("size", "stride"), [(24, 6), (10, 1), (25, 25), (8, 10), (300, 1)])
def test_windows_equal_a_numpy_loop(dataset, lazy, values, backend, size, stride):
    ds = dataset if backend == "numpy" else lazy
    out = pp.windows(ds, "time", size, stride)
    expected = _reference(values["temperature"], size, stride)
    assert out.temperature.dims == ("sample", "window", "point")
    assert out.sizes["sample"] == pp.window_count(300, size, stride) == len(expected)
    np.testing.assert_array_equal(out.temperature.values, expected)
    np.testing.assert_array_equal(out.pressure.values, _reference(values["pressure"], size,
                                                                  stride))
    # Each sample says where it starts, in the dimension's own coordinate.
    np.testing.assert_array_equal(out.start.values, dataset.time.values[::stride][:len(expected)])
    if backend == "dask":
        assert out.temperature.chunks is not None
        assert out.temperature.data.chunksize[2] == 7  # other dimensions stay whole


def test_patches_need_no_copy_of_the_graph_beyond_a_reshape(lazy):
    out = pp.windows(lazy.chunk({"time": 50}), "time", 25)
    # 50-step chunks hold two whole patches each: no rechunk, one task per input chunk more.
    assert out.temperature.data.chunks[0] == (2,) * 6


def test_variables_without_the_dimension_pass_through(dataset):
    ds = dataset.assign(height=("point", np.arange(7.0)))
    out = pp.windows(ds, "time", 10, 5)
    xr.testing.assert_identical(out.height, ds.height)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dim": "time", "size": 301}, "size=301 is longer than dimension 'time' \\(300 steps\\)"),
    ({"dim": "day", "size": 3}, "dim='day' is not a dimension.*'time', 'point'"),
    ({"dim": "time", "size": 0}, "size must be a positive integer, not 0"),
    ({"dim": "time", "size": 3, "stride": -1}, "stride must be a positive integer"),
    ({"dim": "time", "size": 2.5}, "size must be a positive integer, not 2.5"),
])
def test_errors_name_what_to_fix(dataset, kwargs, message):
    with pytest.raises(pp.PreprocessError, match=message):
        pp.windows(dataset, **kwargs)
