"""What a user's server learns about the dashboards service (``QuotaSpawnerMixin.get_env``).

Read from the hub's registered ``dashboards`` service (c.JupyterHub.services), so the
config file says each value once:

- ``GPULAB_RUNS_DIR``: the runs root the service reads (``gpulab.runs.default_root``), so
  a run a user starts is one the service can show;
- ``GPULAB_RUN_LINKS``: ``1``/``0``, whether view-only links may be made;
- ``GPULAB_DASHBOARDS_URL``: the service's URL (``gpulab.dashboards.urls.service_url``):
  the hub's public URL where configured (``c.JupyterHub.public_url``), else the path under
  the hub's base URL (``/services/dashboards/``), which a browser on the hub's pages
  resolves against the hub.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlunparse

from gpulab.dashboards.urls import SERVICE_NAME, URL_ENV

PASSED_ON = ("GPULAB_RUNS_DIR", "GPULAB_RUN_LINKS")


def dashboards_env(hub_settings: dict[str, Any]) -> dict[str, str]:
    """The variables above ({} when the hub runs no dashboards service)."""
    service = (hub_settings.get("services") or {}).get(SERVICE_NAME)
    if service is None:
        return {}
    environment = dict(getattr(service, "environment", None) or {})
    env = {name: str(environment[name]) for name in PASSED_ON if name in environment}
    public = hub_settings.get("public_url")  # a parsed URL when configured, else ""
    origin = ""
    if public:
        origin = urlunparse(public._replace(path="", params="", query="", fragment=""))
    env[URL_ENV] = origin + service.prefix
    return env
