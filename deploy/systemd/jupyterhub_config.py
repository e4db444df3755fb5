"""gpulab on one production machine (a lab's GPU box): each user's server a systemd unit
under its own OS account, seeing only the GPUs the quota granted it.

Run by deploy/systemd/jupyterhub.service (as root: systemd-run starts units for other
accounts), with this environment (/etc/gpulab/gpulab.env):

- ``GPULAB_LEDGER_URL``: the quota ledger (SQLite under /var/lib/gpulab, or PostgreSQL);
- ``GPULAB_QUOTA_FILE``: the policies (deploy/systemd/quota.yaml); the GPUs come from NVML;
- ``GPULAB_PUBLIC_URL``: where the proxy listens (default http://:8000; put TLS in front);
- ``GPULAB_PUBLIC_HOSTS``: the public host[:port] (dashboards' websocket origins);
- ``GPULAB_DYNAMIC_USERS`` (default 1): 1 gives each hub user a systemd dynamic user
  (no account to create); 0 runs each server as the existing OS account of that name;
- ``GPULAB_ADMINS`` (optional): comma-separated operators.

What differs from the embedded default: see docs/deploy-systemd.md.
"""

import os
import shutil
from pathlib import Path

from gpulab_hub.deploy_services import register_services
from gpulab_hub.hub_db import sqlite_wal_kwargs
from gpulab_hub.quota_file import apply_quota_settings

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
env = os.environ
state = Path(env.get("STATE_DIRECTORY", "/var/lib/gpulab"))  # systemd's StateDirectory=
runs_dir = env.get("GPULAB_RUNS_DIR", str(state / "runs"))

# --- Where it listens ----------------------------------------------------------------
c.JupyterHub.bind_url = env.get("GPULAB_PUBLIC_URL", "http://:8000")
c.ConfigurableHTTPProxy.command = [shutil.which("configurable-http-proxy")
                                   or "configurable-http-proxy"]
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
# WAL mode: commits don't sync the disk twice each on the hub's event loop (gpulab_hub/hub_db.py).
c.JupyterHub.db_kwargs = sqlite_wal_kwargs(state / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")

# --- Who can log in ------------------------------------------------------------------
# The machine's accounts (JupyterHub's default PAM authenticator); with dynamic users, any
# authenticator (e.g. gpulab-oauth) works, as no account is needed.
admins = {name.strip() for name in env.get("GPULAB_ADMINS", "").split(",") if name.strip()}
c.Authenticator.admin_users = admins
c.Authenticator.allow_all = True

# --- Servers: one systemd unit each ---------------------------------------------------
c.JupyterHub.spawner_class = "gpulab-systemd"
# Users' units outlive a restart of the hub (an upgrade, a crash): it finds them again.
c.JupyterHub.cleanup_servers = False
c.Spawner.default_url = "/lab"
c.GpulabSystemdSpawner.dynamic_users = env.get("GPULAB_DYNAMIC_USERS", "1") == "1"
c.GpulabSystemdSpawner.isolate_tmp = True
c.GpulabSystemdSpawner.disable_user_sudo = True
# The shared runs root (mode 1777, like /tmp) is the only place outside their home that
# users write to.
c.GpulabSystemdSpawner.readwrite_paths = [runs_dir]
c.GpulabSystemdSpawner.unit_extra_properties = {"TasksMax": "4096"}
# Limits per gpulab profile ("*": every profile without its own entry): MemoryMax and
# CPUQuota of the unit. The GPUs: DevicePolicy=closed + DeviceAllow for the granted ones.
c.GpulabSystemdSpawner.profile_resources = {
    "cpu": {"mem_limit": "8G", "cpu_limit": 4},
    "*": {"mem_limit": "64G", "cpu_limit": 16},
}

# --- GPUs and quotas -----------------------------------------------------------------
apply_quota_settings(c)
register_services(
    c,
    env=env,
    quota_url="http://127.0.0.1:10101",
    dashboards_url="http://127.0.0.1:10102",
    runs_dir=runs_dir,
    origins=[h.strip() for h in env.get("GPULAB_PUBLIC_HOSTS", "localhost:8000").split(",")
             if h.strip()],
    operators=sorted(admins),
)
