"""An IPython extension that shows a kernel's start-up notice under the first cell it runs.

A kernel's own output at start-up reaches no notebook (there is no cell yet), so the
provisioner puts the notice in ``GPULAB_KERNEL_NOTICE`` and loads this extension
(``--IPKernelApp.extra_extensions=gpulab_kernels.notice``) when a GPU kernel falls back to
the CPU. The notice goes to stderr, which JupyterLab shows highlighted, once.
"""

from __future__ import annotations

import os
import sys

NOTICE_ENV = "GPULAB_KERNEL_NOTICE"


def load_ipython_extension(ipython) -> None:
    notice = os.environ.get(NOTICE_ENV, "")
    if not notice:
        return
    print(notice, file=sys.__stderr__, flush=True)  # the server's log, for the operator

    def show_once(*_args) -> None:
        ipython.events.unregister("pre_run_cell", show_once)
        print(notice, file=sys.stderr, flush=True)

    ipython.events.register("pre_run_cell", show_once)
