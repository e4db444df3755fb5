"""gpulab's kernelspecs and their installation (``gpulab kernels install``).

- ``gpulab-gpu``, "Python 3 (gpulab GPU)": one GPU of the server's allocation, leased by
  ``gpulab-gpu-provisioner`` to this kernel alone; with none free it fails to start
  (``fallback: "fail"``) unless installed with ``--fallback cpu``.
- ``gpulab-cpu``, "Python 3 (gpulab CPU)": no GPU (``CUDA_VISIBLE_DEVICES=""``), so any
  number of them run beside the GPU kernels.

They are written into ``<prefix>/share/jupyter/kernels``; the default prefix is this
Python's ``sys.prefix`` (the venv the single-user servers run from), where every Jupyter
server of this environment finds them. ``argv[0]`` is ``python``, which jupyter_client
replaces by the server's own interpreter.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

PROVISIONER = "gpulab-gpu-provisioner"
GPU_KERNEL, CPU_KERNEL = "gpulab-gpu", "gpulab-cpu"


def kernelspec(display_name: str, config: dict[str, Any],
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """A kernel.json for an ipykernel started by gpulab's provisioner with ``config``."""
    spec: dict[str, Any] = {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "metadata": {
            "debugger": True,
            "kernel_provisioner": {"provisioner_name": PROVISIONER, "config": config},
        },
    }
    if env:
        spec["env"] = env
    return spec


def gpulab_kernelspecs(*, fallback: str = "fail", share: bool = False) -> dict[str, dict]:
    """The two kernelspecs by name; ``fallback``/``share`` set the GPU one's config."""
    return {
        GPU_KERNEL: kernelspec("Python 3 (gpulab GPU)",
                               {"gpus": 1, "share": share, "fallback": fallback}),
        # The env makes "no GPU" hold even where the provisioner is configured otherwise.
        CPU_KERNEL: kernelspec("Python 3 (gpulab CPU)", {"gpus": 0},
                               env={"CUDA_VISIBLE_DEVICES": "", "GPULAB_ALLOCATED_DEVICES": ""}),
    }


def _logos() -> list[Path]:
    try:
        import ipykernel
    except ImportError:
        return []
    resources = Path(ipykernel.__file__).parent / "resources"
    return sorted(resources.glob("logo-*"))


def install(prefix: str | None = None, *, user: bool = False, fallback: str = "fail",
            share: bool = False) -> list[str]:
    """Write the kernelspecs (replacing earlier ones of the same name); their folders."""
    import json

    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelSpecManager()
    installed = []
    for name, spec in gpulab_kernelspecs(fallback=fallback, share=share).items():
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / name
            source.mkdir()
            (source / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
            for logo in _logos():  # the launcher's Python icon
                shutil.copy(logo, source / logo.name)
            installed.append(manager.install_kernel_spec(
                str(source), name, user=user,
                prefix=None if user else (prefix or sys.prefix)))
    return installed
