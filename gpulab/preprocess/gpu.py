"""CuPy-backed arrays where there is a GPU, NumPy elsewhere, behind one call.

The helpers in this package only use array methods and NumPy functions that CuPy also
implements (through ``__array_function__``), so the same code runs on either; ``as_cupy``
is the one switch. It is decided in the process that builds the graph (the notebook
kernel), which under gpulab shares its allocation with the cluster's workers.
"""

from __future__ import annotations

from typing import Any


def gpu_available() -> bool:
    """True where CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, or CUDA_VISIBLE_DEVICES hides every device
        return False


def as_cupy(ds: Any, *, use_gpu: bool | None = None) -> Any:
    """``ds`` with CuPy-backed arrays (cupy-xarray's ``.cupy.as_cupy()``) when a GPU is
    there (``use_gpu=None``) or asked for (``True``: no GPU is then an error); unchanged
    otherwise. Dask-backed data stays lazy: each chunk moves to the GPU on its worker."""
    if use_gpu is None:
        use_gpu = gpu_available()
    if not use_gpu:
        return ds
    if not gpu_available():
        raise RuntimeError("use_gpu=True but no GPU is visible to CuPy here (is CuPy "
                           "installed, pip install 'gpulab[gpu]', and a GPU allocated?)")
    try:
        import cupy_xarray  # noqa: F401  (registers the .cupy accessor)
    except ImportError:
        raise RuntimeError("the GPU path needs cupy-xarray: pip install 'gpulab[gpu]'") from None
    return ds.cupy.as_cupy()


def is_cupy(array: Any) -> bool:
    """A CuPy array, or a Dask array whose chunks are CuPy arrays."""
    meta = getattr(array, "_meta", array)
    return type(meta).__module__.split(".")[0] == "cupy"


def to_numpy(array: Any) -> Any:
    """A host copy of a CuPy array; NumPy arrays pass through."""
    return array.get() if is_cupy(array) else array
