"""Faults around one hub that keeps running (shared by the tests of this module):

- a spawn that times out (a server that never listens) releases its allocation and
  leaves no process behind;
- a stop while the spawn is pending (DELETE during it) does the same;
- the proxy killed (SIGKILL, pid from the state folder's proxy.pid): JupyterHub notices
  within ``ConfigurableHTTPProxy.check_running_interval`` (5 s), starts a new proxy and
  restores every route, so a running server answers at /user/NAME/ again;
- a ledger writer killed inside its write transaction while a spawn waits for the ledger's
  write lock: the spawn is admitted once the lock is free, nothing of the dead writer is
  visible (tests/quota/test_crash.py covers the ledger alone, on both backends).

Each test ends with ``assert_consistent``: the ledger's open allocations are the hub's
servers, no device twice.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from gpulab.gpus import StaticInventory
from tests.e2e.test_gpu_spawns import server_environment
from tests.reliability.conftest import (
    assert_consistent,
    hub_servers,
    server_processes,
    stop_all,
    wait_no_server_process,
    wait_ready,
    wait_stopped,
)
from tests.waiting import poll

pytestmark = pytest.mark.e2e

HANG_START_TIMEOUT = 6  # fault_hub_config.py's (a config file: not importable)


def open_users(ledger) -> set[str]:
    return {a.user for a in ledger.open_allocations()}


def test_a_spawn_that_times_out_releases_its_gpu(fault_hub, fault_admin, ledger):
    started = time.monotonic()
    response = fault_admin.api("POST", "/users/hang1/server", json={"gpus": 1})
    # The timeout (6 s) is shorter than the hub's 10 s wait before it answers 202, so the
    # POST itself usually reports it (JupyterHub's 500 "timeout").
    assert response.status_code in (202, 500), response.text
    if response.status_code == 500:
        assert response.json()["message"] == "timeout"
    wait_stopped(fault_admin, "hang1", timeout=HANG_START_TIMEOUT + 60)
    assert time.monotonic() - started >= HANG_START_TIMEOUT
    poll(lambda: "hang1" not in open_users(ledger), timeout=30, what="the release")
    [granted] = ledger.audit("hang1", action="granted", limit=1)  # it had a GPU ...
    [released] = ledger.audit("hang1", action="released", limit=1)  # ... given back
    assert (released.allocation_id, released.reason) == (granted.allocation_id, "start_failed")
    wait_no_server_process(fault_hub.state_dir, "hang1")
    assert_consistent(fault_admin, ledger, fault_hub.state_dir)
    assert free_gpus(ledger) == ALL_GPUS


ALL_GPUS = {gpu.uuid for gpu in StaticInventory.synthetic(2).devices()}


def free_gpus(ledger) -> set[str]:
    held = {uuid for a in ledger.open_allocations() for uuid in a.device_uuids}
    return ALL_GPUS - held


def test_a_stop_during_the_spawn_releases_its_gpu(fault_hub, fault_admin, ledger):
    response = fault_admin.api("POST", "/users/slow2/server", json={"gpus": 1})
    assert response.status_code == 202, response.text
    poll(lambda: "slow2" in open_users(ledger), timeout=30, what="the admission")
    poll(lambda: server_processes(fault_hub.state_dir, "slow2"), timeout=30)

    stop = fault_admin.api("DELETE", "/users/slow2/server")
    assert stop.status_code in (202, 204), stop.text
    wait_stopped(fault_admin, "slow2")
    poll(lambda: "slow2" not in open_users(ledger), timeout=30, what="the release")
    wait_no_server_process(fault_hub.state_dir, "slow2")
    # None comes back: the cancelled start does not retry on another port.
    time.sleep(2)
    assert not server_processes(fault_hub.state_dir, "slow2")
    assert_consistent(fault_admin, ledger, fault_hub.state_dir)
    assert free_gpus(ledger) == ALL_GPUS


def test_a_killed_proxy_is_restarted_with_its_routes(fault_hub, fault_admin, ledger):
    assert fault_admin.api("POST", "/users/ivy/server", json={"gpus": 1}).ok
    wait_ready(fault_admin, "ivy")
    assert fault_admin.get_as_user("/user/ivy/api/status").status_code == 200

    pid_file = fault_hub.state_dir / "proxy.pid"
    old_pid = int(pid_file.read_text())
    proxy = psutil.Process(old_pid)
    assert "configurable-http-proxy" in " ".join(proxy.cmdline())
    proxy.send_signal(signal.SIGKILL)
    proxy.wait(10)

    def answers():
        try:
            return fault_admin.get_as_user("/user/ivy/api/status").status_code == 200
        except OSError:  # nothing listens on the public port yet
            return False

    poll(answers, timeout=60, what="the user's server through a restarted proxy", every=0.5)
    new_pid = int(pid_file.read_text())
    assert new_pid != old_pid and psutil.pid_exists(new_pid)
    # The hub's own pages and API are routed again too, and the server is still the one
    # that ran before (the proxy's death touched no server).
    assert fault_admin.api("GET", "/users/ivy").json()["servers"][""]["ready"]
    assert server_environment("ivy")["GPULAB_GPUS"] == "1"
    assert_consistent(fault_admin, ledger, fault_hub.state_dir)
    stop_all(fault_admin, fault_hub.state_dir)


def test_a_ledger_writer_killed_mid_transaction_leaves_no_partial_grant(
    fault_hub, fault_admin, ledger
):
    url = f"sqlite:///{fault_hub.state_dir / 'ledger.sqlite'}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.quota.crash_worker", url, "mid_transaction"],
        cwd=os.getcwd(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers = []
    try:
        assert worker.stdout.readline().strip() == "READY", worker.stderr.read()
        # The worker committed a grant for "kept" and holds the write lock over an
        # uncommitted one for "lost". A spawn now waits for that lock ...
        spawn = threading.Thread(
            target=lambda: answers.append(
                fault_admin.api("POST", "/users/jon/server", json={"gpus": 1})
            )
        )
        spawn.start()
        time.sleep(2)
        assert "jon" not in open_users(ledger)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    spawn.join(60)
    assert answers and answers[0].status_code in (201, 202), answers
    # ... and is admitted once the dead writer's lock is gone.
    wait_ready(fault_admin, "jon")
    allocations = {a.user: a for a in ledger.open_allocations()}
    assert "lost" not in allocations and "lost" not in {e.user for e in ledger.audit()}
    # The committed grant of the worker is a real allocation of a server the hub does not
    # run (the quota service reconciles such rows); close it to compare with the hub.
    assert allocations["kept"].device_uuids
    ledger.release(allocations["kept"].id, reason="reconciled")
    assert ledger.verify() == []
    assert_consistent(fault_admin, ledger, fault_hub.state_dir)
    stop_all(fault_admin, fault_hub.state_dir)
    assert not hub_servers(fault_admin)
