"""The quota service as a single-user server (or its kernels) sees it: plain HTTP with the
server's own API token.

The hub's spawner puts ``GPULAB_QUOTA_URL`` (the service's URL, ending in
``/services/gpulab-quota/``) and ``JUPYTERHUB_API_TOKEN`` in the server's environment;
kernels inherit both. Outside gpulab's hub neither is set and ``QuotaClient.from_env()``
is None: clusters then run within the local limits only.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

TIMEOUT_SECONDS = 10.0


class QuotaServiceError(RuntimeError):
    """The quota service refused a request (or could not be reached).

    ``status`` is the HTTP status (0 when unreachable) and ``body`` its JSON answer, which
    carries a ``message`` written for the user (and ``reason``, ``limit``, ``in_use`` for a
    refused limit).
    """

    def __init__(self, status: int, body: Mapping[str, Any]):
        super().__init__(str(body.get("message") or f"quota service answered {status}"))
        self.status = status
        self.body = dict(body)


class QuotaClient:
    def __init__(self, url: str, token: str, server: str = "", *, timeout: float = TIMEOUT_SECONDS):
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.server = server
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QuotaClient | None:
        env = os.environ if env is None else env
        url, token = env.get("GPULAB_QUOTA_URL"), env.get("JUPYTERHUB_API_TOKEN")
        if not url or not token:
            return None
        return cls(url, token, env.get("JUPYTERHUB_SERVER_NAME", ""))

    def __repr__(self) -> str:  # never shows the token
        return f"QuotaClient({self.url!r}, server={self.server!r})"

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path.lstrip("/"),
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise QuotaServiceError(e.code, _json_or_message(e.read(), e.code)) from None
        except (urllib.error.URLError, OSError) as e:
            raise QuotaServiceError(
                0, {"message": f"the quota service at {self.url} cannot be reached: {e}"}
            ) from None
        return json.loads(raw) if raw else None

    def me(self) -> dict[str, Any]:
        """The caller's allocations, usage, limits, budget left, warnings and clusters."""
        return self.call("GET", "api/me")

    def admit_cluster(
        self, key: str, name: str, workers: int, gpus: int, devices: list[str]
    ) -> dict[str, Any]:
        body = {
            "key": key,
            "server": self.server,
            "name": name,
            "workers": workers,
            "gpus": gpus,
            "devices": devices,
        }
        return self.call("POST", "api/clusters", body)

    def scale_cluster(self, key: str, workers: int) -> dict[str, Any]:
        return self.call("PATCH", f"api/clusters/{key}", {"workers": workers})

    def release_cluster(self, key: str) -> None:
        try:
            self.call("DELETE", f"api/clusters/{key}")
        except QuotaServiceError as e:
            if e.status != 404:  # already closed (e.g. the server stopped): nothing to do
                raise


def _json_or_message(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"message": f"quota service answered {status}: {raw[:200].decode(errors='replace')}"}
