"""The GPU test hub (``tests/e2e/gpu_hub_config.py``: 2 static GPUs, 1 each, the admin 2)
with the failure modes the fault tests need, chosen by the user's name:

- ``hang*``: a server that never listens (a process that only sleeps), with a start
  timeout of ``HANG_START_TIMEOUT`` seconds: the spawn that times out;
- ``slow*``: a server that sleeps ``SLOW_SECONDS`` before it starts: a spawn that stays
  pending long enough to stop it, or to kill the hub under it;
- everyone else: the embedded default's server.

A file ``ledger-url`` in the state folder, when present, replaces the ledger's URL (a
PostgreSQL the test started); the hub's services read this same file, so they follow.
"""

import sys
from pathlib import Path

from gpulab_hub.settings import EmbeddedSettings
from gpulab_hub.spawner import LocalGpulabSpawner

load_subconfig(str(Path(__file__).resolve().parents[1] / "e2e" / "gpu_hub_config.py"))  # noqa: F821
c = get_config()  # noqa: F821

HANG_START_TIMEOUT = 6
SLOW_SECONDS = 20


class FaultySpawner(LocalGpulabSpawner):
    """LocalGpulabSpawner whose server misbehaves for users named hang* or slow*."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        name = self.user.name if self.user else ""
        if name.startswith("hang"):
            self.start_timeout = HANG_START_TIMEOUT
            self.cmd = [sys.executable, "-c", "import time; time.sleep(3600)"]
        elif name.startswith("slow"):
            real = self.cmd[0]
            self.cmd = [
                sys.executable,
                "-c",
                f"import os, sys, time; time.sleep({SLOW_SECONDS}); "
                f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])",
            ]


c.JupyterHub.spawner_class = FaultySpawner

ledger_url_file = EmbeddedSettings.from_env().state_dir / "ledger-url"
if ledger_url_file.exists():
    c.GpulabQuota.ledger_url = ledger_url_file.read_text().strip()
    for service in c.JupyterHub.services:
        if service["name"] == "dashboards":
            service["environment"]["GPULAB_LEDGER_URL"] = c.GpulabQuota.ledger_url
