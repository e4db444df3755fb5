"""The embedded default with JupyterHub's own ``SimpleLocalProcessSpawner`` instead of
gpulab's spawner: the baseline of ``bench.spawn``. Same hub, proxy, authenticator,
services and spawner settings otherwise; the servers run the same
``jupyterhub-singleuser`` (the one beside this Python), in homes under the state folder.
"""

import os
import sys
from pathlib import Path

from gpulab_hub.settings import EmbeddedSettings

load_subconfig(str(Path(__file__).resolve().parents[1] / "jupyterhub_config.py"))  # noqa: F821
c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(
    EmbeddedSettings.from_env().home_root / "{username}"
)
# The hub runs from .venv without it on PATH: the single-user command beside this Python,
# as gpulab's spawner finds it.
c.SimpleLocalProcessSpawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
if os.geteuid() == 0:
    c.SimpleLocalProcessSpawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
