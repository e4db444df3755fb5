"""Zarr and NetCDF (h5netcdf) round trips, opened lazily with chunks sized in bytes."""

import numpy as np
import pytest
import xarray as xr

from gpulab import preprocess as pp


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_round_trip_is_lazy_and_equal(dataset, tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".zarr":
        dataset.chunk({"time": 50}).to_zarr(path)  # stored chunks of 50 steps
    else:
        dataset.to_netcdf(path, engine="h5netcdf")
    # 7 float32 points a step = 28 bytes a step: 2800 bytes hold 100 steps.
    ds = pp.open_dataset(path, chunk_bytes=2800)
    assert ds.temperature.chunks == ((100, 100, 100), (7,))
    xr.testing.assert_equal(ds.load(), dataset)
    stats = pp.compute_stats(pp.open_dataset(path), progress=False)
    assert stats["pressure"].mean == pytest.approx(dataset.pressure.values.astype(float).mean())


def test_chunks_round_to_whole_stored_chunks(dataset, tmp_path):
    path = tmp_path / "stored.zarr"
    dataset.chunk({"time": 40}).to_zarr(path)
    ds = pp.open_dataset(path, chunk_bytes=2800)  # 100 steps wanted: 80, two stored chunks
    assert ds.temperature.chunks[0][0] == 80
    ds = pp.open_dataset(path, chunk_bytes=1)  # never less than one stored chunk
    assert ds.temperature.chunks[0][0] == 40
    ds = pp.open_dataset(path, chunks={"time": 120})  # explicit chunks win
    assert ds.temperature.chunks[0][0] == 120
    assert pp.open_dataset(path).temperature.chunks[0] == (300,)  # 64 MiB holds it all


def test_errors_name_what_to_fix(dataset, tmp_path):
    path = tmp_path / "data.zarr"
    dataset.to_zarr(path)
    with pytest.raises(pp.PreprocessError, match="dim='day' is not a dimension of .* 'time'"):
        pp.open_dataset(path, dim="day")
    with pytest.raises(pp.PreprocessError, match="chunk_bytes must be a size like '64 MiB'"):
        pp.open_dataset(path, chunk_bytes="lots")
    with pytest.raises(pp.PreprocessError, match="chunk_bytes must be"):
        pp.open_dataset(path, chunk_bytes=0)
    with pytest.raises(pp.PreprocessError, match="no dataset at"):
        pp.open_dataset(tmp_path / "missing.nc")
    odd = tmp_path / "data.bin"
    odd.write_bytes(b"\0")
    with pytest.raises(pp.PreprocessError, match="pass engine='zarr' or engine='h5netcdf'"):
        pp.open_dataset(odd)


def test_example_dataset_is_lazy_and_reproducible():
    a = pp.example_dataset(400, 5, seed=3, chunk_bytes=4000)
    b = pp.example_dataset(400, 5, seed=3, chunk_bytes=4000)
    assert a.temperature.chunks[0] == (200, 200)
    np.testing.assert_array_equal(a.temperature.values, b.temperature.values)
    assert 900 < float(a.pressure.mean()) < 1100
