"""Kernels started by a real `jupyter server` process through gpulab's provisioner.

- ``kernelspec_path``: a JUPYTER_PATH folder with the kernelspecs as ``gpulab kernels
  install --prefix`` writes them, plus variants (fallback cpu, shared, a broken config) a
  user or operator would add; module-scoped.
- ``start_server(root, devices)``: a LiveServer whose allocation is ``devices``
  (GPULAB_ALLOCATED_DEVICES, fake ids are fine: only environment variables are involved).
- ``Kernels``: what JupyterLab does with the REST API (sessions, restart, shutdown), and
  ``run()`` to execute code in a kernel and read its output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from jupyter_client import BlockingKernelClient

from gpulab_kernels.kernelspecs import kernelspec
from gpulab_kernels.leases import LeaseBook
from tests.extensions.live_server import LiveServer
from tests.waiting import poll

GPULAB = Path(sys.executable).with_name("gpulab")
VARIANTS = {
    "gpulab-gpu-fallback": kernelspec("GPU or CPU", {"gpus": 1, "fallback": "cpu"}),
    "gpulab-gpu-shared": kernelspec("GPU, shared", {"gpus": 1, "share": True}),
    "gpulab-gpu-broken": kernelspec("Broken", {"gpus": 1, "fallback": "maybe"}),
    "gpulab-gpu-misspelt": kernelspec("Misspelt", {"gpu": 2}),
}


@pytest.fixture(scope="module")
def kernelspec_path(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run([str(GPULAB), "kernels", "install", "--prefix", str(prefix)], check=True,
                   capture_output=True, timeout=120)
    kernels = prefix / "share" / "jupyter" / "kernels"
    for name, spec in VARIANTS.items():
        (kernels / name).mkdir()
        (kernels / name / "kernel.json").write_text(json.dumps(spec))
    return prefix / "share" / "jupyter"


def start_server(root: Path, devices: str, kernelspec_path: Path) -> LiveServer:
    return LiveServer.start(root, {"GPULAB_ALLOCATED_DEVICES": devices,
                                   "CUDA_VISIBLE_DEVICES": devices,
                                   "JUPYTER_PATH": str(kernelspec_path)})


class KernelStartFailed(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"{status}: {body.get('message')}")
        self.status, self.body = status, body


class Kernels:
    """One server's kernels, driven the way JupyterLab drives them."""

    def __init__(self, server: LiveServer):
        self.server = server
        self.book = LeaseBook(Path(server.env["JUPYTER_RUNTIME_DIR"])
                              / "gpulab-kernel-leases.json")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.server.url + path, headers=self.server.auth,
                                timeout=120, **kwargs)

    def open_notebook(self, kernel: str, notebook: str | None = None) -> str:
        """POST /api/sessions as JupyterLab does to open a notebook; the kernel id."""
        notebook = notebook or f"{uuid.uuid4().hex[:6]}.ipynb"
        answer = self.api("POST", "api/sessions", json={
            "path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": kernel}})
        if answer.status_code != 201:
            raise KernelStartFailed(answer.status_code, answer.json())
        return answer.json()["kernel"]["id"]

    def run(self, kernel_id: str, code: str) -> dict[str, str]:
        """Execute ``code``; its stdout and stderr as the notebook shows them."""
        client = BlockingKernelClient(connection_file=str(
            Path(self.server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        streams = {"stdout": "", "stderr": ""}

        def collect(msg):
            if msg["msg_type"] == "stream":
                streams[msg["content"]["name"]] += msg["content"]["text"]

        try:
            # A kernel still importing on a busy machine can miss a heartbeat, which
            # wait_for_ready takes for a death: ask again until it answers.
            poll(lambda: ready(client), 90, f"kernel {kernel_id} to answer", 0.5)
            reply = client.execute_interactive(code, timeout=60, output_hook=collect)
            assert reply["content"]["status"] == "ok", reply["content"]
        finally:
            client.stop_channels()
        return streams

    def visible_devices(self, kernel_id: str) -> str:
        out = self.run(kernel_id, "import json, os\n"
                                  "print(json.dumps(os.environ.get('CUDA_VISIBLE_DEVICES')))")
        return json.loads(out["stdout"])

    def leases(self) -> dict[str, list[str]]:
        return {lease.kernel_id: lease.devices for lease in self.book.leases()}

    def shutdown(self, kernel_id: str) -> None:
        assert self.api("DELETE", f"api/kernels/{kernel_id}").status_code == 204


def ready(client: BlockingKernelClient) -> bool:
    try:
        client.wait_for_ready(timeout=30)
    except RuntimeError:
        return False
    return True
