"""One-pass statistics: equal to NumPy's, one read of each chunk for all variables."""

import math

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from gpulab import preprocess as pp
from gpulab.preprocess.stats import chunk_moments, merge
from tests.preprocess.conftest import CountingArray


def _numpy_stats(v):
    v = np.asarray(v, dtype=np.float64)
    v = v[~np.isnan(v)]
    return v.size, v.mean(), v.std(), v.min(), v.max()


def _assert_matches(stats, v):
    n, mean, std, lo, hi = _numpy_stats(v)
    assert stats.count == n
    assert stats.mean == pytest.approx(mean, rel=1e-6)
    assert stats.std == pytest.approx(std, rel=1e-6)
    assert (stats.min, stats.max) == (lo, hi)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_statistics_equal_numpys(dataset, lazy, values, backend):
    stats = pp.compute_stats(dataset if backend == "numpy" else lazy, progress=False)
    assert set(stats) == {"temperature", "pressure"}
    for name, v in values.items():
        _assert_matches(stats[name], v)


def test_float64_int_and_missing_values():
    rng = np.random.default_rng(1)
    f64 = rng.standard_normal((500, 3)) * 1e-3 + 1e6  # large offset, small spread
    ints = rng.integers(-50, 50, (500, 3)).astype(np.int32)
    holes = rng.standard_normal((500, 3)).astype(np.float32)
    holes[::7, 1] = np.nan
    ds = xr.Dataset({"f64": (("t", "x"), f64), "ints": (("t", "x"), ints),
                     "holes": (("t", "x"), holes)}).chunk({"t": 64})
    stats = pp.compute_stats(ds, progress=False)
    _assert_matches(stats["ints"], ints)
    _assert_matches(stats["holes"], holes)
    assert stats["holes"].count == holes.size - np.isnan(holes).sum()
    assert stats["f64"].mean == pytest.approx(f64.mean(), rel=1e-12)
    assert stats["f64"].std == pytest.approx(f64.std(), rel=1e-6)


def test_pieces_larger_than_the_cache_block_merge_exactly(monkeypatch):
    monkeypatch.setattr("gpulab.preprocess.stats.PIECE", 1000)
    v = np.random.default_rng(2).standard_normal(10_500).astype(np.float32) * 4 + 7
    n, mean, m2, lo, hi = chunk_moments(v)
    assert n == v.size and lo == v.min() and hi == v.max()
    assert mean == pytest.approx(v.astype(np.float64).mean(), rel=1e-7)
    assert math.sqrt(m2 / n) == pytest.approx(v.astype(np.float64).std(), rel=1e-6)
    # Merging is order-free: halves merged equal the whole.
    a, b = chunk_moments(v[:3000]), chunk_moments(v[3000:])
    assert merge(a, b) == pytest.approx(merge(b, a))


def test_all_variables_in_one_pass_read_each_chunk_once(values):
    source = CountingArray(values["temperature"])
    chunks = 6
    base = da.from_array(source, chunks=(50, -1), meta=np.empty((0, 0), np.float32))
    assert base.numblocks[0] == chunks
    # Two variables derived from one source, as two fields of one Zarr chunk would be.
    ds = xr.Dataset({"t": (("time", "point"), base), "t2": (("time", "point"), base * 2)})
    with dask.config.set(scheduler="threads"):
        stats = pp.compute_stats(ds, progress=False)
    assert source.reads == chunks  # not 2 * chunks: both variables in one graph
    assert stats["t2"].mean == pytest.approx(2 * stats["t"].mean, rel=1e-6)
    # The same statistics one variable at a time read the data twice: what one pass saves.
    source.reads = 0
    with dask.config.set(scheduler="threads"):
        for name in ("t", "t2"):
            pp.compute_stats(ds, [name], progress=False)
    assert source.reads == 2 * chunks


def test_stats_save_and_load_as_json(dataset):
    stats = pp.compute_stats(dataset, progress=False)
    assert pp.Stats.from_json(stats.to_json()) == stats


def test_errors_name_what_to_fix(dataset):
    with pytest.raises(pp.PreprocessError, match="unknown variable 'salinity'.*'temperature'"):
        pp.compute_stats(dataset, ["salinity"])
    with pytest.raises(pp.PreprocessError, match="variables is empty"):
        pp.compute_stats(dataset, [])
    empty = xr.Dataset({"gone": (("t",), np.full(4, np.nan))})
    with pytest.raises(pp.PreprocessError, match="'gone' has no values that are not NaN"):
        pp.compute_stats(empty, progress=False)


def test_progress_is_shown_when_asked_and_for_long_work_by_default(lazy, capsys, monkeypatch):
    pp.compute_stats(lazy, progress=True)
    assert "statistics of temperature, pressure: done 100%" in capsys.readouterr().err
    pp.compute_stats(lazy, progress=False)
    pp.compute_stats(lazy)  # by default, work under a second says nothing outside a notebook
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("gpulab.preprocess.progress.QUIET_FOR_S", 0.0)
    pp.compute_stats(lazy)
    assert "done 100%" in capsys.readouterr().err


def test_the_notebook_bar_escapes_the_label():
    from gpulab.preprocess.progress import Bar

    bundle = Bar("stats of <script>", None)._bundle(0.5, "computing")
    assert "&lt;script&gt;" in bundle["text/html"] and "<script>" not in bundle["text/html"]
    assert "value='50'" in bundle["text/html"]
