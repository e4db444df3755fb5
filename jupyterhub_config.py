"""gpulab's embedded default: one machine, no external services.

Read it top to bottom: every setting the hub runs with is here; the pieces come from
``gpulab_hub``. Settings come from the environment (see gpulab_hub/settings.py):
GPULAB_STATE_DIR (default ./var), GPULAB_IP (127.0.0.1), GPULAB_PORT (8000) and
GPULAB_ADMIN (admin). Start it with `make run` (or `gpulab hub`), which waits until the
hub answers and prints where to log in.
"""

import os
import sys
from pathlib import Path

from gpulab_hub.hub_db import sqlite_wal_kwargs
from gpulab_hub.ports import free_port, remembered_port
from gpulab_hub.secrets import read_or_create_secret
from gpulab_hub.settings import EmbeddedSettings

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

settings = EmbeddedSettings.from_env()
settings.make_dirs()
state = settings.state_dir
project = Path(__file__).resolve().parent

# --- Where it listens ----------------------------------------------------------------
# The public proxy on GPULAB_IP:GPULAB_PORT. The hub's own API and the proxy's API take
# free loopback ports, kept in the state folder (so servers that outlived a killed hub
# find its API again after a restart), so hubs with their own state folders and
# GPULAB_PORT run side by side on one machine.
# (A hub service reading this file for its own settings must not move the hub's ports.)
claim_ports = "JUPYTERHUB_SERVICE_NAME" not in os.environ
hub_api_port = remembered_port(state / "hub-api-port", claim=claim_ports)
proxy_api_port = remembered_port(state / "proxy-api-port", claim=claim_ports)
c.JupyterHub.bind_url = settings.public_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{hub_api_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [str(project / "node_modules/.bin/configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.ConfigurableHTTPProxy.auth_token = read_or_create_secret(state / "proxy-token", 32)[0]

# --- State: everything under the state folder ----------------------------------------
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
# WAL mode: commits don't sync the disk twice each on the hub's event loop (gpulab_hub/hub_db.py).
c.JupyterHub.db_kwargs = sqlite_wal_kwargs(state / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.logging_config = {
    "handlers": {
        "file": {
            "class": "logging.FileHandler",
            "formatter": "console",
            "filename": str(settings.log_dir / "jupyterhub.log"),
        }
    },
    "loggers": {"JupyterHub": {"handlers": ["console", "file"]}},
}

# --- Who can log in ------------------------------------------------------------------
# NativeAuthenticator: people sign up at /hub/signup; an admin approves them at
# /hub/authorize. Its approval is the allow-list, hence allow_all. The admin's account
# is created on first start with a generated password, printed once (below).
c.JupyterHub.authenticator_class = "gpulab-native"
c.Authenticator.admin_users = {settings.admin}
c.Authenticator.allow_all = True
c.GpulabNativeAuthenticator.admin_password_file = str(settings.admin_password_file)
c.NativeAuthenticator.open_signup = False
c.NativeAuthenticator.minimum_password_length = 10
c.NativeAuthenticator.check_common_password = True

admin_password, admin_password_is_new = read_or_create_secret(settings.admin_password_file)
if admin_password_is_new:
    # Shown on the first start only; it stays in the state folder (mode 0600).
    print(f"admin user: {settings.admin}", flush=True)
    print(f"admin password: {admin_password}", flush=True)

# --- Servers -------------------------------------------------------------------------
# One JupyterLab process per user, under the hub's own OS account (no isolation between
# users: see README), in a home folder under the state folder. Each server gets its own
# port, never drawn twice (gpulab_hub/ports.py).
c.JupyterHub.spawner_class = "gpulab-local"
c.LocalGpulabSpawner.home_dir_template = str(settings.home_root / "{username}")
c.LocalGpulabSpawner.log_dir = str(settings.log_dir / "servers")
# Each server's pid, written as it starts: a hub killed mid-spawn ends that server at its
# restart instead of leaving it running (and its GPUs granted twice).
c.LocalGpulabSpawner.pid_dir = str(state / "servers")
# Users' servers and kernels run at niceness 10: the hub and the proxy answer everyone and
# come first when the CPU is short (a workshop's arrival: dozens of servers starting). Each
# server and kernel is a session of its own, niced as a whole (gpulab.priority): the
# servers by the spawner, their kernels by gpulab's default kernel provisioner.
c.LocalGpulabSpawner.nice = 10
c.Spawner.environment = {"JUPYTER_DEFAULT_PROVISIONER_NAME": "gpulab-local-provisioner"}
# Every server runs from the hub's own environment (see README: no isolation), so
# JupyterLab's extension manager must not pip-install into it from a user's browser.
c.Spawner.args = ["--LabApp.extension_manager=readonly"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120  # 20 servers starting at once take ~50 s on 2 cores
c.Spawner.http_timeout = 60
# The hub's own HTTP client (to the proxy's API and to starting servers) is tornado's,
# which runs 10 requests at once by default (JupyterHub uses pycurl where installed; it is
# not here). With dozens of servers starting, their readiness checks took all 10 and the
# proxy's route updates timed out in the queue, failing spawns (bench.hub_load).
from tornado.httpclient import AsyncHTTPClient  # noqa: E402

AsyncHTTPClient.configure(None, max_clients=200)
# The server's own API token (JUPYTERHUB_API_TOKEN): JupyterHub's defaults (the "server"
# role: post activity, reach this server) plus the quota service, which the server calls to
# start, scale and stop Dask clusters (at GPULAB_QUOTA_URL, set by the spawner).
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=gpulab-quota",
]

# --- Idle culler ---------------------------------------------------------------------
# Servers with no activity for an hour are stopped, freeing their resources.
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        # parent_watch: the culler ends with the hub, even a hub killed with SIGKILL.
        "command": [
            *(sys.executable, "-m", "gpulab_hub.parent_watch", "--"),
            *(sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600"),
        ],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]

# --- GPUs and quotas -----------------------------------------------------------------
# Every spawn, CPU or GPU, is admitted by the quota ledger (SQLite in the state folder;
# a PostgreSQL URL in production), which hands out each GPU to one server at a time.
# GPUs come from NVML; a node without NVML offers CPU servers only. Limits (None = no
# limit): see GpulabQuota's help for the fields and which level wins.
c.GpulabQuota.ledger_url = f"sqlite:///{state / 'ledger.sqlite'}"
c.GpulabQuota.default_policy = {}

# The quota service (a hub-managed process) accrues GPU-hours and energy, warns users whose
# budget or session length runs out, stops their servers after the grace period, and
# serves /services/gpulab-quota/api/me (every user, about themselves), api/clusters (the
# Dask clusters a user's servers start, counted against max_dask_workers), api/usage and
# metrics (operators). It reads this same file for the settings above.
c.QuotaService.tick_seconds = 30
c.QuotaService.warn_before_seconds = 15 * 60
c.QuotaService.grace_seconds = 5 * 60
c.JupyterHub.services.append(
    {
        "name": "gpulab-quota",
        "url": f"http://127.0.0.1:{free_port()}",
        "command": [
            sys.executable,
            "-m",
            "gpulab_hub.quota_service",
            "--config",
            os.environ.get("GPULAB_HUB_CONFIG", __file__),
        ],
        # Services get a clean environment: hand on what this file reads.
        "environment": {
            "GPULAB_STATE_DIR": str(state),
            "GPULAB_IP": settings.ip,
            "GPULAB_PORT": str(settings.port),
            "GPULAB_ADMIN": settings.admin,
        },
        "oauth_no_confirm": True,
    }
)
c.JupyterHub.custom_scopes = {
    "custom:gpulab:operate": {"description": "Read everyone's GPU usage and quota reports."}
}
c.JupyterHub.load_roles += [
    {
        "name": "gpulab-quota",
        "scopes": [
            "list:users",
            "read:users",
            "read:servers",
            "delete:servers",
            "users:activity",
        ],
        "services": ["gpulab-quota"],
    },
    # Everyone may ask the quota service about themselves.
    {"name": "user", "scopes": ["self", "access:services!service=gpulab-quota"]},
    {"name": "gpulab-operator", "scopes": ["custom:gpulab:operate"], "users": [settings.admin]},
]

# --- Dashboards ----------------------------------------------------------------------
# Every user's server and the dashboards service share one runs root (GPULAB_RUNS_DIR,
# passed on to servers by the spawner), so the service can show a run to whoever its
# owner shares it with. The service serves /services/dashboards/ behind the hub's login:
# your runs and those shared with you, runs/OWNER/RUN_ID, compare, the operators' usage
# page, and view-only links/TOKEN (no login: the token is the credential, for that run
# only). See docs/dashboards.md. run_links = False turns view-only links off: the service
# answers 404 for every link and servers refuse to make them (GPULAB_RUN_LINKS=0). The
# Bokeh websocket accepts only the hub's public origin (behind a reverse proxy, put its
# public host:port in dashboards_origins).
runs_dir = state / "runs"
runs_dir.mkdir(exist_ok=True)
run_links = True
dashboards_origins = [f"{settings.ip}:{settings.port}"]
if settings.ip == "127.0.0.1":
    dashboards_origins.append(f"localhost:{settings.port}")
c.JupyterHub.services.append(
    {
        "name": "dashboards",
        "url": f"http://127.0.0.1:{free_port()}",
        "command": [sys.executable, "-m", "gpulab_hub.dashboards_service"],
        "environment": {
            "GPULAB_RUNS_DIR": str(runs_dir),
            "GPULAB_RUN_LINKS": "1" if run_links else "0",
            "GPULAB_LEDGER_URL": c.GpulabQuota.ledger_url,
            "GPULAB_DASHBOARDS_ORIGINS": ",".join(dashboards_origins),
        },
        "oauth_no_confirm": True,
        # Operators' logins keep their operator scope in the service's token (usage page).
        "oauth_client_allowed_scopes": ["custom:gpulab:operate"],
    }
)
c.JupyterHub.load_roles.append(
    # The groups of everyone, for the usage page's "by group"; their roles, to know who
    # instructs which workshop (an instructor may view their students' runs).
    {"name": "dashboards", "scopes": ["list:users", "read:users:groups", "read:roles:users"],
     "services": ["dashboards"]}
)
# Everyone may open the dashboards service (what they see there is decided per run).
for role in c.JupyterHub.load_roles:
    if role["name"] == "user":
        role["scopes"].append("access:services!service=dashboards")

# --- Workshops and roles -------------------------------------------------------------
# Roles: researchers and students hold the default "user" role (students are limited by
# their workshop's group policy in the ledger); each workshop's instructors hold
# "instructor-NAME", whose scopes are filtered to the workshop's group; operators are the
# admins. `gpulab workshop create|close` (an operator's tool) calls the hub's workshop API,
# which creates the group, the accounts and the instructor role in one transaction of the
# hub's database; /hub/gpulab/instructor is the instructors' page. See docs/workshops.md.
from gpulab_hub.workshops import TEMPLATES_DIR  # noqa: E402
from gpulab_hub.workshops import handlers as workshop_handlers  # noqa: E402
from gpulab_hub.workshops.first_password import first_login_hook  # noqa: E402

c.JupyterHub.extra_handlers = workshop_handlers()
c.JupyterHub.template_paths = [TEMPLATES_DIR]
# A student still on the one-time password is sent to /hub/change-password at login.
c.Authenticator.post_auth_hook = first_login_hook
# The token `gpulab workshop` uses on this machine (mode 0600 in the state folder).
c.JupyterHub.services.append(
    {
        "name": "gpulab-workshops-cli",
        "api_token": read_or_create_secret(state / "workshops-token", 32)[0],
    }
)
c.JupyterHub.load_roles.append(
    {
        "name": "gpulab-workshops-cli",
        "scopes": ["admin:users", "admin:groups", "admin:servers"],
        "services": ["gpulab-workshops-cli"],
    }
)

# --- Logging in through an identity provider (optional) ------------------------------
# With GPULAB_OAUTH_CLIENT_ID set (and the other GPULAB_OAUTH_* variables: docs/oauth.md),
# people log in through OAuth 2 / OpenID Connect (oauthenticator's GenericOAuthenticator,
# groups from the provider's claims) instead of NativeAuthenticator. Unset: nothing changes.
from gpulab_hub.oauth import configure_oauth  # noqa: E402

configure_oauth(c)
