"""gpulab's hub services and roles in a scale-out deployment (Kubernetes, Slurm, systemd):
the same services as the embedded default (jupyterhub_config.py), configured for a hub
whose settings come from the environment instead of a state folder.

- ``gpulab-quota``: accounting, warnings, the quota API (``api/me``, ``api/clusters``);
  it reads the shared quota settings through deploy/services_config.py
  (``GPULAB_QUOTA_FILE`` + ``GPULAB_LEDGER_URL``, see ``gpulab_hub.quota_file``);
- ``dashboards``: the run dashboards at /services/dashboards/, on the shared runs root
  (``GPULAB_RUNS_DIR``: a shared volume's path or an fsspec URL such as s3://bucket/runs).

A service already listed in ``c.JupyterHub.services`` (Zero to JupyterHub registers
``hub.services`` there, with its API token) is completed, not added twice.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

QUOTA = "gpulab-quota"
DASHBOARDS = "dashboards"
SERVICES_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "services_config.py"
PASSED_TO_QUOTA = ("GPULAB_QUOTA_FILE", "GPULAB_LEDGER_URL")


def _service(c: Any, name: str) -> dict[str, Any]:
    services = c.JupyterHub.services if "services" in c.JupyterHub else []
    services = [dict(s) for s in services]
    entry = next((s for s in services if s.get("name") == name), None)
    if entry is None:
        entry = {"name": name}
        services.append(entry)
    c.JupyterHub.services = services
    return next(s for s in c.JupyterHub.services if s["name"] == name)


def register_services(
    c: Any,
    *,
    env: Mapping[str, str],
    quota_url: str,
    dashboards_url: str,
    runs_dir: str,
    origins: Sequence[str],
    operators: Sequence[str] = (),
    services_config: str | None = None,
    python: str = sys.executable,
) -> None:
    """Add (or complete) the two services and their roles in the config ``c``.

    ``quota_url`` and ``dashboards_url``: where each service listens, as the hub and the
    proxy reach it (``http://HOST:PORT``); ``origins``: the hub's public host:port(s), the
    only pages that may open a dashboard's websocket; ``operators``: users who see
    everyone's usage. ``env``: the hub's environment, from which the services get the
    quota settings (services start with a clean environment).
    """
    missing = [name for name in PASSED_TO_QUOTA[1:] if not env.get(name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be set (the quota ledger's URL)")
    passed = {name: env[name] for name in PASSED_TO_QUOTA if env.get(name)}
    config_file = services_config or env.get("GPULAB_SERVICES_CONFIG") or str(SERVICES_CONFIG)

    quota = _service(c, QUOTA)
    quota.update(
        url=quota_url,
        command=[python, "-m", "gpulab_hub.quota_service", "--config", config_file],
        environment={**quota.get("environment", {}), **passed},
        oauth_no_confirm=True,
    )
    dashboards = _service(c, DASHBOARDS)
    dashboards.update(
        url=dashboards_url,
        command=[python, "-m", "gpulab_hub.dashboards_service"],
        environment={
            **dashboards.get("environment", {}),
            "GPULAB_RUNS_DIR": runs_dir,
            "GPULAB_RUN_LINKS": env.get("GPULAB_RUN_LINKS", "1"),
            "GPULAB_LEDGER_URL": env["GPULAB_LEDGER_URL"],
            "GPULAB_DASHBOARDS_ORIGINS": ",".join(origins),
        },
        oauth_no_confirm=True,
        oauth_client_allowed_scopes=["custom:gpulab:operate"],
    )

    c.Spawner.server_token_scopes = [
        "users:activity!user",
        "access:servers!server",
        f"access:services!service={QUOTA}",
    ]
    c.JupyterHub.custom_scopes = {
        **(c.JupyterHub.custom_scopes if "custom_scopes" in c.JupyterHub else {}),
        "custom:gpulab:operate": {"description": "Read everyone's GPU usage and quota reports."},
    }
    roles = [dict(r) for r in (c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else [])]
    roles = [r for r in roles if r.get("name") not in (QUOTA, DASHBOARDS, "gpulab-operator")]
    user_role = next((r for r in roles if r.get("name") == "user"), None)
    if user_role is None:
        user_role = {"name": "user", "scopes": ["self"]}
        roles.append(user_role)
    user_role["scopes"] = list(dict.fromkeys([
        *user_role.get("scopes", []),
        f"access:services!service={QUOTA}",
        f"access:services!service={DASHBOARDS}",
    ]))
    roles += [
        {
            "name": QUOTA,
            "scopes": ["list:users", "read:users", "read:servers", "delete:servers",
                       "users:activity"],
            "services": [QUOTA],
        },
        {"name": DASHBOARDS, "scopes": ["list:users", "read:users:groups"],
         "services": [DASHBOARDS]},
        {"name": "gpulab-operator", "scopes": ["custom:gpulab:operate"],
         "users": list(operators)},
    ]
    c.JupyterHub.load_roles = roles
