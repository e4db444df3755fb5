"""gpulab: the core library of a research environment for shared GPU datacenters.

Importable in a notebook kernel, in a Dask worker and in the hub alike: nothing here
imports Jupyter, JupyterHub or the adapters in ``gpulab_hub``, ``gpulab_jupyterlab``
and ``gpulab_kernels`` (see DESIGN.md for the direction of dependence).
"""

__version__ = "0.1.0"
