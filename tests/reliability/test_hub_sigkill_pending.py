"""SIGKILL the hub while a GPU server runs AND another GPU spawn is pending, then restart.

tests/e2e/test_hub_killed.py covers running servers across a SIGKILL; this adds the spawn
in flight: it was admitted (its allocation holds a GPU) but its server was not up when
the hub died. After the restart the running server is reattached with its device, the
pending spawn's allocation is released (the hub finds that server gone and stops it), no
device is held twice, and the freed GPU can be had again.
"""

import contextlib
import signal

import psutil
import pytest

from tests.e2e.test_gpu_spawns import server_environment
from tests.e2e.test_hub_killed import jupyterhub_process
from tests.reliability.conftest import (
    assert_consistent,
    hub_ledger,
    server_processes,
    start_fault_hub,
    wait_no_server_process,
    wait_ready,
    wait_stopped,
)
from tests.waiting import poll

pytestmark = pytest.mark.e2e


def hub_services(state):
    """The service processes of the hub whose state folder is ``state``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            command = " ".join(proc.cmdline())
            if not any(name in command for name in SERVICES):
                continue
            if any(str(state) in value for value in proc.environ().values()):
                found.append(proc)
    return found


SERVICES = ("gpulab_hub.quota_service", "gpulab_hub.dashboards_service",
            "jupyterhub_idle_culler")


def test_sigkill_with_a_running_and_a_pending_gpu_spawn(tmp_path):
    state = tmp_path / "state"
    first = start_fault_hub(state)
    orphans = []
    try:
        admin = first.admin_session()
        admin.api("POST", "/users", json={"usernames": ["ivy", "slow1", "kim"]})
        assert admin.api("POST", "/users/ivy/server", json={"gpus": 1}).ok
        wait_ready(admin, "ivy")
        ivy_device = server_environment("ivy")["CUDA_VISIBLE_DEVICES"]

        pending = admin.api("POST", "/users/slow1/server", json={"gpus": 1})
        assert pending.status_code == 202, pending.text
        with hub_ledger(state) as ledger:
            # Admitted (it holds the other GPU) and its process started, not yet up.
            poll(lambda: "slow1" in {a.user for a in ledger.open_allocations()}, timeout=30)
            orphans = poll(lambda: server_processes(state, "slow1"), timeout=30)
            assert not admin.api("GET", "/users/slow1").json()["servers"][""]["ready"]
            held = {a.user: a.device_uuids for a in ledger.open_allocations()}
            assert held["ivy"] == (ivy_device,) and held["slow1"] != (ivy_device,)

        jupyterhub_process(first).send_signal(signal.SIGKILL)
        first.proc.wait(30)
        # Its services (quota, dashboards, idle culler) notice and end: none outlives it.
        poll(lambda: not hub_services(state), timeout=30,
             what="the killed hub's services to end")
    finally:
        first.stop()

    second = start_fault_hub(state, first.port)
    try:
        admin = second.admin_session(first.printed_admin_password)
        wait_ready(admin, "ivy", timeout=30)  # reattached, same device
        assert server_environment("ivy")["CUDA_VISIBLE_DEVICES"] == ivy_device
        assert admin.get_as_user("/user/ivy/api/status").status_code == 200
        # The pending spawn died with the hub: the restarted hub stops it, and so releases
        # its allocation.
        wait_stopped(admin, "slow1")
        # ... and ends its process (its pid file, written as it started): no orphan keeps
        # the GPU the ledger now hands out again.
        wait_no_server_process(state, "slow1")
        assert not (state / "servers" / "slow1.pid").exists()
        with hub_ledger(state) as ledger:
            released = poll(
                lambda: [
                    a for a in ledger.audit("slow1", action="released", limit=10) if a.allocation_id
                ],
                timeout=30,
                what="the pending spawn's allocation to be released",
            )
            assert released[0].reason == "reconciled"
            assert_consistent(admin, ledger, state)

            # The freed GPU goes to the next spawn, and to nobody else.
            assert admin.api("POST", "/users/kim/server", json={"gpus": 1}).status_code in (
                201,
                202,
            )
            wait_ready(admin, "kim")
            kim_device = server_environment("kim")["CUDA_VISIBLE_DEVICES"]
            assert kim_device not in ("", ivy_device)
            assert_consistent(admin, ledger, state)
    finally:
        second.stop()
        for proc in orphans:  # only if the test failed before the restart ended it
            if proc.is_running():
                proc.kill()
    wait_no_server_process(state, "ivy")
