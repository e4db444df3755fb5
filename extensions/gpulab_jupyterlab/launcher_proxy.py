"""jupyter-server-proxy's entry for the launcher dashboard (entry point
``jupyter_serverproxy_servers``: ``gpulab-launcher``).

``/user/NAME/gpulab-launcher/`` on the user's own server starts
``gpulab.dashboards.launcher_app`` on first visit and proxies to it, behind that server's
login (jupyter-server-proxy's handlers are the server's authenticated handlers). The app
gets the full path (``absolute_url``), so Panel's links and websocket resolve under the
prefix; a per-server secret, set in the app's environment and added by the proxy to every
request it forwards, keeps other local accounts from reaching the app around the login.
JupyterLab's launcher shows a "gpulab launcher" card that opens it.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

NAME = "gpulab-launcher"


def setup() -> dict[str, Any]:
    from gpulab.dashboards.launcher_app import TOKEN_ENV, TOKEN_HEADER

    token = secrets.token_urlsafe(32)
    return {
        "command": [sys.executable, "-m", "gpulab.dashboards.launcher_app",
                    "--port", "{port}", "--prefix", "{base_url}" + NAME],
        "environment": {TOKEN_ENV: token},
        "request_headers_override": {TOKEN_HEADER: token},
        "absolute_url": True,
        "timeout": 90,  # Panel's first import on a busy machine
        "new_browser_tab": True,
        "launcher_entry": {"enabled": True, "title": "gpulab launcher",
                           "path_info": NAME + "/"},
    }
