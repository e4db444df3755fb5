"""Open a Zarr store or a NetCDF file lazily, chunked for preprocessing.

Chunks run along the sample dimension (``time`` by default) and hold every other
dimension whole, sized in bytes: big enough that Dask's per-task overhead (about a
millisecond) is small against the work, small enough that a worker holds several at once.
64 MiB is the default; ``chunk_bytes`` or explicit ``chunks`` override it. For Zarr the
chunk is rounded to whole stored chunks, so no stored chunk is read twice.
"""

from __future__ import annotations

import os
from typing import Any

from gpulab.preprocess.errors import PreprocessError

DEFAULT_CHUNK_BYTES = "64 MiB"
ENGINES = {".zarr": "zarr", ".nc": "h5netcdf", ".nc4": "h5netcdf", ".h5": "h5netcdf",
           ".hdf5": "h5netcdf", ".netcdf": "h5netcdf"}


def engine_for(path: str) -> str:
    suffix = os.path.splitext(str(path).rstrip("/"))[1].lower()
    if suffix in ENGINES:
        return ENGINES[suffix]
    if os.path.isdir(path):
        return "zarr"  # a Zarr store is a folder, whatever its name
    raise PreprocessError(f"cannot tell the format of {str(path)!r} from its name: pass "
                          "engine='zarr' or engine='h5netcdf' (NetCDF-4)", field="engine")


def parse_chunk_bytes(value: Any) -> int:
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(value)
    except (ValueError, TypeError):
        size = -1
    if isinstance(value, bool) or size < 1:
        raise PreprocessError(f"chunk_bytes must be a size like '64 MiB' or a number of bytes "
                              f"> 0, not {value!r}", field="chunk_bytes")
    return int(size)


def chunk_steps(ds: Any, dim: str, chunk_bytes: int) -> int:
    """Steps of ``dim`` per chunk so the largest variable's chunk is about ``chunk_bytes``,
    rounded to whole stored chunks where the store has them."""
    widest = 1
    stored = 1
    for var in ds.data_vars.values():
        if dim not in var.dims:
            continue
        per_step = var.dtype.itemsize * max(var.size // max(var.sizes[dim], 1), 1)
        widest = max(widest, per_step)
        preferred = var.encoding.get("preferred_chunks", {}).get(dim)
        if preferred:
            stored = max(stored, int(preferred))
    steps = max(1, chunk_bytes // widest)
    steps = max(stored, (steps // stored) * stored)
    return min(steps, int(ds.sizes[dim]))


def open_dataset(path: str | os.PathLike, *, dim: str = "time",
                 chunk_bytes: Any = DEFAULT_CHUNK_BYTES, chunks: dict[str, int] | None = None,
                 engine: str | None = None, **kwargs: Any) -> Any:
    """An xarray Dataset backed by Dask, nothing read but metadata.

    ``dim`` is the dimension samples are drawn along; chunks hold ``chunk_bytes`` of the
    widest variable along it and every other dimension whole, unless ``chunks`` (a dict
    dimension -> length, as xarray takes) says otherwise. ``engine`` defaults from the
    name: ``.zarr`` (or any folder) is Zarr, ``.nc``/``.h5`` is NetCDF-4 through h5netcdf.
    Other keyword arguments go to ``xarray.open_dataset``."""
    import xarray as xr

    path = os.fspath(path)
    if not os.path.exists(path):
        raise PreprocessError(f"no dataset at {path!r}", field="path")
    engine = engine or engine_for(path)
    if chunks is None:
        size = parse_chunk_bytes(chunk_bytes)
        with xr.open_dataset(path, engine=engine, chunks=None, **kwargs) as probe:
            if dim not in probe.dims:
                known = ", ".join(map(repr, probe.dims)) or "none"
                raise PreprocessError(f"dim={dim!r} is not a dimension of {path!r} (its "
                                      f"dimensions: {known})", field="dim")
            steps = chunk_steps(probe, dim, size)
            chunks = {d: (steps if d == dim else -1) for d in probe.dims}
    return xr.open_dataset(path, engine=engine, chunks=chunks, **kwargs)
