"""GPU clusters on a machine without GPUs, for the tests of the server's shared lease book.

- ``fake_cuda(spec, devices, common)``: stands in for ``dask_cuda.LocalCUDACluster`` (which
  needs a real GPU): a real ``distributed.LocalCluster`` whose one worker process gets
  ``CUDA_VISIBLE_DEVICES`` set to its device, which is all the lease logic touches.
  ``install()`` puts it in place of ``gpulab.clusters.local._build_cuda``.
- ``python -m tests.kernels.cluster_owner WORKERS NAME``: a process that starts a GPU
  cluster as the Jupyter server does for the sidebar (owner kind "server", the whole
  allocation of ``GPULAB_ALLOCATED_DEVICES``), prints its id once it runs, and keeps it
  until its stdin closes, or dies with it when killed.
- ``jupyter_server_config.py`` text (``SERVER_CONFIG``): a Jupyter config file that installs
  the stand-in in a real ``jupyter server`` process, so the sidebar's REST API starts GPU
  clusters there (the server needs this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import sys
from typing import Any

SERVER_CONFIG = "import tests.kernels.cluster_owner as owner\nowner.install()\n"


def fake_cuda(spec: Any, devices: list[str], common: dict[str, Any]) -> Any:
    from distributed import LocalCluster

    if len(devices) != 1 or common["n_workers"] != 1:
        raise ValueError("the stand-in for LocalCUDACluster runs one worker on one device")
    return LocalCluster(processes=True, env={"CUDA_VISIBLE_DEVICES": devices[0]}, **common)


def install() -> None:
    from gpulab.clusters import local

    local._build_cuda = fake_cuda


def main() -> None:
    install()
    from gpulab import clusters

    workers, name = int(sys.argv[1]), sys.argv[2]
    cluster = clusters.start(workers=workers, gpus_per_worker=1, name=name, progress=False,
                             owner_kind="server")
    print(cluster.id, flush=True)
    sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
