"""A real `jupyter server` process with gpulab's extension, for tests that need real HTTP
(schemathesis, cookies and XSRF) or that stop the server."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from gpulab.priority import lower_priority
from gpulab_hub.ports import free_port

BIN = Path(sys.executable).parent


@dataclass
class LiveServer:
    process: subprocess.Popen
    url: str  # ends with "/"
    token: str
    env: dict
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    @classmethod
    def start(cls, root: Path, extra_env: dict | None = None, niceness: int = 0) -> LiveServer:
        """A ``jupyter server`` on a free port; ``niceness``: started that much niced, as
        gpulab's spawner starts users' servers."""
        root.mkdir(parents=True, exist_ok=True)
        port, token = free_port(), secrets.token_hex(16)
        env = {
            **os.environ,
            "HOME": str(root / "home"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
            "JUPYTER_DATA_DIR": str(root / "data"),
            "GPULAB_CLUSTERS_DIR": str(root / "clusters"),
            "CUDA_VISIBLE_DEVICES": "",
            **(extra_env or {}),
        }
        for name in ("GPULAB_QUOTA_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_SERVICE_PREFIX"):
            env.pop(name, None)
        (root / "home").mkdir(exist_ok=True)
        log = root / "server.log"
        args = [str(BIN / "jupyter-server"), "--no-browser", "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'home'}",
                # Named here too, so these tests don't hang on how the venv enables it
                # (the browser tests check the installed configuration).
                "--ServerApp.jpserver_extensions=gpulab_jupyterlab=True"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        with open(log, "w") as out:
            process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        if niceness:
            lower_priority(process.pid, niceness)  # as gpulab's spawner does
        server = cls(process, f"http://127.0.0.1:{port}/", token, env, log)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(server.url + "api/status", headers=server.auth,
                                timeout=2).status_code == 200:
                    return server
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                server.stop(signal.SIGKILL)
                raise RuntimeError(f"jupyter server did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.1)
