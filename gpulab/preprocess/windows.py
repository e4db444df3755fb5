"""Samples from a long dimension: windows of ``size`` steps every ``stride`` steps.

``windows(ds, "time", size=24, stride=6)`` turns each variable with a ``time`` dimension
into one with dimensions ``("sample", "window", *others)``: sample ``i`` is steps
``i*stride .. i*stride+size-1``. Steps after the last whole window are dropped. Variables
without the dimension (a static map, say) pass through unchanged.

It stays lazy and never copies what it does not have to: with ``stride >= size``
(patches, no overlap) it is a reshape; with overlap, a strided view of each chunk plus the
``size-1`` steps it borrows from the next (Dask's ``sliding_window_view``). With overlap the
windowed data is ``size/stride`` times the input, so load batches of it
(``ShardedBatches``) rather than the whole thing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpulab.preprocess.errors import PreprocessError, check_dim, check_positive_int
from gpulab.preprocess.gpu import is_cupy

SAMPLE = "sample"
WINDOW = "window"


def window_count(length: int, size: int, stride: int) -> int:
    """How many whole windows fit in ``length`` steps."""
    return 0 if length < size else (length - size) // stride + 1


def windows(ds: Any, dim: str, size: int, stride: int | None = None) -> Any:
    """Sliding windows (``stride`` < ``size``), patches (``stride`` = ``size``, the
    default) or spaced samples (``stride`` > ``size``) of ``ds`` along ``dim``.

    The result has a ``sample`` dimension first, then ``window`` (0 .. size-1), then the
    variable's other dimensions; the coordinate ``start`` holds ``dim``'s coordinate at
    each sample's first step, so every sample says where it came from."""
    length = check_dim(ds, dim)
    size = check_positive_int(size, "size")
    stride = size if stride is None else check_positive_int(stride, "stride")
    if size > length:
        raise PreprocessError(f"size={size} is longer than dimension {dim!r} ({length} steps): "
                              f"use a window of at most {length} steps", field="size")
    count = window_count(length, size, stride)
    import xarray as xr

    out = {}
    for name, var in ds.data_vars.items():
        if dim not in var.dims:
            out[name] = var
            continue
        axis = var.dims.index(dim)
        data = window_array(var.data, axis, size, stride, count)
        others = tuple(d for d in var.dims if d != dim)
        out[name] = xr.DataArray(data, dims=(SAMPLE, WINDOW, *others), attrs=var.attrs)
    starts = np.arange(count) * stride
    coords = {SAMPLE: np.arange(count), WINDOW: np.arange(size)}
    if dim in ds.coords:
        coords["start"] = (SAMPLE, ds[dim].values[starts])
    for name, coord in ds.coords.items():
        if dim not in coord.dims and name not in coords:
            coords[name] = coord
    return xr.Dataset(out, coords=coords, attrs=dict(ds.attrs, windowed=f"{dim} {size}/{stride}"))


def window_array(data: Any, axis: int, size: int, stride: int, count: int) -> Any:
    """(count, size, *other axes) windows of ``data`` (NumPy, CuPy or Dask) along ``axis``."""
    dask_array = _is_dask(data)
    if stride >= size:
        # Patches: cut to whole strides, split the axis in (count, stride), keep `size`.
        data = _take(data, axis, 0, count * stride)
        if dask_array:
            data = _align_chunks(data, axis, stride)
        shape = data.shape[:axis] + (count, stride) + data.shape[axis + 1:]
        data = data.reshape(shape)
        if stride > size:
            data = _take(data, axis + 1, 0, size)
        return _move_to_front(data, axis, axis + 1)
    if dask_array and not is_cupy(data):
        from dask.array.lib.stride_tricks import sliding_window_view
    elif is_cupy(data):
        from cupy.lib.stride_tricks import sliding_window_view
    else:
        from numpy.lib.stride_tricks import sliding_window_view
    if dask_array and is_cupy(data):
        # Dask's version calls NumPy's on each chunk; on CuPy chunks, stack strided slices.
        import dask.array as da

        pieces = [_take(data, axis, j, j + (count - 1) * stride + 1, stride)
                  for j in range(size)]
        return _move_to_front(da.stack(pieces, axis=axis + 1), axis, axis + 1)
    # Dask's automatic rechunk would split the other dimensions into slivers to bound the
    # view's nominal size; the view is cut by `stride` right after, so keep them whole.
    extra = {"automatic_rechunk": False} if dask_array else {}
    view = sliding_window_view(data, size, axis=axis, **extra)  # window axis last
    view = _take(view, axis, 0, (count - 1) * stride + 1, stride)
    return _move_to_front(view, axis, view.ndim - 1)


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask.")


def _take(data: Any, axis: int, start: int, stop: int, step: int = 1) -> Any:
    index = [slice(None)] * data.ndim
    index[axis] = slice(start, stop, step)
    return data[tuple(index)]


def _align_chunks(data: Any, axis: int, stride: int) -> Any:
    """Chunks along ``axis`` made whole multiples of ``stride`` (near their current size),
    so the reshape splits no patch across two chunks."""
    chunk = max(data.chunks[axis])
    if all(c % stride == 0 for c in data.chunks[axis]):
        return data
    rows = max(stride, round(chunk / stride) * stride)
    return data.rechunk({axis: rows})


def _move_to_front(data: Any, sample_axis: int, window_axis: int) -> Any:
    # np.moveaxis dispatches to Dask and CuPy arrays (__array_function__).
    return np.moveaxis(data, (sample_axis, window_axis), (0, 1))
