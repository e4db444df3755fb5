"""A hub killed with SIGKILL while GPU servers run, then started again on the same state:
the servers keep their GPUs, the ledger hands none out twice, accrual goes on."""

import signal
import time
from pathlib import Path

import psutil
import pytest

from gpulab.quota.ledger import Ledger
from gpulab_hub.ports import free_port
from tests.e2e.harness import RunningHub
from tests.e2e.test_gpu_spawns import server_environment, wait_ready, wait_stopped

pytestmark = pytest.mark.e2e


def jupyterhub_process(launcher: RunningHub) -> psutil.Process:
    for child in psutil.Process(launcher.proc.pid).children(recursive=True):
        if any(part.endswith("/jupyterhub") for part in child.cmdline()[:2]):
            return child
    raise AssertionError("no jupyterhub process under the launcher")


def test_sigkilled_hub_restarts_with_its_allocations(tmp_path):
    state, port = tmp_path / "state", free_port()
    first = RunningHub.start_with_config(state, "gpu_hub_config.py", port)
    try:
        admin = first.admin_session()
        admin.api("POST", "/users", json={"usernames": ["ivy", "jon", "kim"]})
        for name in ("ivy", "jon"):
            assert admin.api("POST", f"/users/{name}/server", json={"gpus": 1}).ok
            wait_ready(admin, name)
        devices = {n: server_environment(n)["CUDA_VISIBLE_DEVICES"] for n in ("ivy", "jon")}
        servers = {n: server_environment(n) for n in ("ivy", "jon")}
        assert len(set(devices.values())) == 2

        hub_process = jupyterhub_process(first)
        services = [
            p
            for p in hub_process.children(recursive=True)
            if "idle_culler" in " ".join(p.cmdline()) or "quota_service" in " ".join(p.cmdline())
        ]
        assert len(services) >= 2, [p.cmdline() for p in services]
        hub_process.send_signal(signal.SIGKILL)
        first.proc.wait(30)
    finally:
        first.stop()

    ledger = Ledger(f"sqlite:///{state / 'ledger.sqlite'}")
    before = {a.user: a for a in ledger.open_allocations()}
    assert set(before) == {"ivy", "jon"}  # nothing released by the crash

    second = RunningHub.start_with_config(state, "gpu_hub_config.py", port)
    try:
        admin = second.admin_session(first.printed_admin_password)
        for name in ("ivy", "jon"):  # the servers survived and the hub kept them
            wait_ready(admin, name, timeout=30)
            assert server_environment(name)["CUDA_VISIBLE_DEVICES"] == devices[name]
            assert servers[name] == server_environment(name)
            status = admin.get_as_user(f"/user/{name}/api/status")
            assert status.status_code == 200, status.text

        # The killed hub's services noticed and ended: no orphan calls a hub that is gone.
        gone, alive = psutil.wait_procs(services, timeout=20)
        assert not alive, [p.cmdline() for p in alive]

        full = admin.api("POST", "/users/kim/server", json={"gpus": 1})
        assert full.status_code == 409, full.text  # no device leaked to a third server
        assert ledger.verify() == []

        time.sleep(2)
        after = {a.user: a for a in ledger.accrue()}
        assert after["ivy"].id == before["ivy"].id
        assert after["ivy"].gpu_seconds > before["ivy"].gpu_seconds

        admin.api("DELETE", "/users/ivy/server")
        wait_stopped(admin, "ivy")
        closed = ledger.allocation(before["ivy"].id)
        assert closed.end_reason == "stopped"
        assert admin.api("POST", "/users/kim/server", json={"gpus": 1}).status_code in (201, 202)
        wait_ready(admin, "kim")
        assert server_environment("kim")["CUDA_VISIBLE_DEVICES"] == devices["ivy"]
    finally:
        second.stop()
    # A clean stop of the second hub stops the servers it took over as well.
    assert not servers_of(state)


def servers_of(state: Path) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "jupyterhub-singleuser" in cmdline and proc.environ().get("HOME", "").startswith(
                str(state)
            ):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids
