"""``gpulab-local-provisioner``: jupyter_client's local provisioner, with each kernel's
session given its server's priority.

A kernel inherits its server's nice value (gpulab's spawner starts servers at niceness
10), but jupyter_client starts it in a session of its own, and with Linux's autogroup
scheduling a session's share of the CPU ignores its processes' nice values
(``gpulab.priority``). Forty students training at once would then leave the hub and its
proxy a forty-first of the CPU. This provisioner gives the kernel's session the server's
own nice value once the kernel starts (nothing where that is 0, or without autogroups).

The embedded default's spawner makes it the servers' default provisioner
(``JUPYTER_DEFAULT_PROVISIONER_NAME``, jupyter_client's variable), so every kernelspec
without a provisioner of its own uses it; gpulab's GPU provisioner builds on it.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

from gpulab.priority import nice_session


class SessionNicedProvisioner(LocalProvisioner):
    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        info = await super().launch_kernel(cmd, **kwargs)
        niceness = os.nice(0)
        if niceness > 0 and self.pid:
            # From the parent, after the start: a preexec_fn in a threaded server can
            # deadlock the child; the kernel runs at its session's default for an instant.
            nice_session(niceness, self.pid)
        return info
