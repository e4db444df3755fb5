"""Run a hub service so that it ends with the hub: ``python -m gpulab_hub.parent_watch --
COMMAND ...``.

JupyterHub stops its managed services when it shuts down, but a hub killed with SIGKILL
can't, and a service that never looks up (jupyterhub-idle-culler) would run on, calling a
hub that is gone, beside the new one's. This wrapper starts COMMAND, passes SIGTERM and
SIGINT on to it, and stops it once its own parent (the hub) is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m gpulab_hub.parent_watch -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    child = subprocess.Popen(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _f: child.send_signal(s))
    while child.poll() is None:
        if os.getppid() != parent:  # re-parented: the hub died
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        time.sleep(1)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
