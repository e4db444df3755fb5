"""Where the hub's dashboards service serves each app: one place for the paths.

The service runs under the hub at ``/services/dashboards/`` (JupyterHub's service prefix);
the sidebar, the notebook API and the service itself build their links here, so a link
made in one place opens in the other.

- ``run_path(owner, run_id)``: one run, live (``runs/OWNER/RUN_ID``);
- ``compare_path(runs)``: several runs overlaid (``compare?run=OWNER/RUN_ID&run=...``);
- ``usage_path()``: the operator's usage view;
- ``link_path(token)``: a view-only link (``links/TOKEN``), for viewers without access.

Owners and run ids are already URL-safe (``gpulab.runs.ids``), but are quoted anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import quote, urlencode

SERVICE_NAME = "dashboards"
SERVICE_PREFIX = f"/services/{SERVICE_NAME}/"
# Set by the hub's spawner for single-user servers: the service's public URL (or path).
URL_ENV = "GPULAB_DASHBOARDS_URL"


def service_url() -> str:
    """The service's base (ends with ``/``): ``$GPULAB_DASHBOARDS_URL`` where the hub set
    it, else the path under a hub at its root."""
    base = os.environ.get(URL_ENV) or SERVICE_PREFIX
    return base if base.endswith("/") else base + "/"


def run_path(owner: str, run_id: str) -> str:
    return f"runs/{quote(owner, safe='')}/{quote(run_id, safe='')}"


def compare_path(runs: Iterable[tuple[str, str]]) -> str:
    return "compare?" + urlencode([("run", f"{owner}/{run_id}") for owner, run_id in runs])


def usage_path() -> str:
    return "usage"


def link_path(token: str) -> str:
    return f"links/{quote(token, safe='')}"


def run_url(owner: str, run_id: str, base: str | None = None) -> str:
    """The full link to ``owner``'s run ``run_id`` on the hub's dashboards service."""
    return (base or service_url()) + run_path(owner, run_id)
