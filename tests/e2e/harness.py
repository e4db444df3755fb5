"""Start the hub exactly as ``make run`` does, and talk to it as a browser or API client.

- ``RunningHub.start(state_dir, port)`` runs ``make -s run`` with a temporary state
  folder and a free port, waits for the ready line, and collects the output;
- ``HubSession`` logs in through the hub's login form (with its XSRF token) and gets an
  API token, as a person with a browser would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "gpulab hub is ready"


@dataclass
class RunningHub:
    proc: subprocess.Popen
    state_dir: Path
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def printed_admin_password(self) -> str | None:
        match = re.search(r"^admin password: (\S+)$", self.output, re.MULTILINE)
        return match.group(1) if match else None

    @classmethod
    def start(
        cls, state_dir: Path, port: int, timeout: float = 120, command: list[str] | None = None
    ) -> RunningHub:
        """Start ``make -s run`` (or ``command``, e.g. ``gpulab hub --config X``)."""
        env = {**os.environ, "GPULAB_STATE_DIR": str(state_dir), "GPULAB_PORT": str(port)}
        proc = subprocess.Popen(
            command or ["make", "-s", "run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # stop() signals make, gpulab hub and jupyterhub
        )
        hub = cls(proc=proc, state_dir=state_dir, port=port)
        ready = threading.Event()

        def collect():
            for line in proc.stdout:
                hub.lines.append(line)
                if READY_LINE in line:
                    ready.set()

        threading.Thread(target=collect, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                hub.stop()
                raise RuntimeError(f"the hub did not become ready:\n{hub.output[-5000:]}")
        return hub

    @classmethod
    def start_with_config(cls, state_dir: Path, config: str, port: int | None = None):
        """``gpulab hub --config tests/e2e/CONFIG`` (a variant of the embedded default)."""
        from gpulab_hub.ports import free_port

        gpulab = str(Path(sys.executable).with_name("gpulab"))
        command = [gpulab, "hub", "--config", str(REPO / "tests" / "e2e" / config)]
        return cls.start(state_dir, port or free_port(), command=command)

    def admin_session(self, password: str | None = None) -> HubSession:
        """The admin, logged in (with the first password unless another is given) and
        holding an API token."""
        session = HubSession(self.url)
        response = session.login("admin", password or self.printed_admin_password)
        assert response.status_code == 302, response.text[:2000]
        session.create_token("admin")
        return session

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class HubSession:
    """A logged-in user of the hub: cookies for pages, a token for the REST API."""

    def __init__(self, hub_url: str):
        self.hub_url = hub_url
        self.http = requests.Session()
        self.token: str | None = None

    def login(self, username: str, password: str) -> requests.Response:
        self.http.get(f"{self.hub_url}/hub/login", timeout=30).raise_for_status()
        return self.http.post(
            f"{self.hub_url}/hub/login",
            data={
                "username": username,
                "password": password,
                "_xsrf": self.http.cookies.get("_xsrf"),
            },
            allow_redirects=False,
            timeout=30,
        )

    def create_token(self, username: str) -> str:
        response = self.http.post(
            f"{self.hub_url}/hub/api/users/{username}/tokens",
            json={"note": "gpulab tests", "expires_in": 3600},
            headers={"X-XSRFToken": self.http.cookies.get("_xsrf")},
            timeout=30,
        )
        response.raise_for_status()
        self.token = response.json()["token"]
        return self.token

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{self.hub_url}/hub/api{path}", headers=headers, timeout=60, **kwargs
        )

    def get_as_user(self, path: str) -> requests.Response:
        """GET a path under the proxy (e.g. /user/NAME/api/...) with the API token."""
        return requests.get(
            f"{self.hub_url}{path}",
            headers={"Authorization": f"token {self.token}"},
            timeout=60,
        )
