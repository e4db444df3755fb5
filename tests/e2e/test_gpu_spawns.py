"""GPU spawns through the quota on a real hub: a node with 2 static GPUs.

Each GPU server sees exactly its device (CUDA_VISIBLE_DEVICES holds its UUID), no device
is handed out twice, a request over capacity or policy is a 4xx with the reason and
changes nothing, bad options are a 400 naming the field, and stopping a server closes its
ledger row so the GPU can be had again.
"""

import time

import psutil
import pytest

from gpulab.quota.ledger import Ledger
from tests.e2e.browser_steps import wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def ledger(gpu_hub):
    return Ledger(f"sqlite:///{gpu_hub.state_dir / 'ledger.sqlite'}")


def wait_stopped(admin, name, timeout=60):
    deadline = time.monotonic() + timeout
    while admin.api("GET", f"/users/{name}").json()["servers"]:
        assert time.monotonic() < deadline, f"the server of {name} did not stop"
        time.sleep(0.5)


def server_environment(name):
    """The environment of NAME's single-user server process, read from /proc."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "jupyterhub-singleuser" in cmdline:
                env = proc.environ()
                if env.get("JUPYTERHUB_USER") == name:
                    return env
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no server process for {name}")


def test_gpu_servers_get_distinct_devices_and_capacity_is_enforced(gpu_hub, gpu_admin, ledger):
    devices = set()
    for name, options in (("alice", {"profile": "1-gpu"}), ("bob", {"gpus": 1})):
        response = gpu_admin.api("POST", f"/users/{name}/server", json=options)
        assert response.status_code in (201, 202), response.text
        wait_ready(gpu_admin, name)
        env = server_environment(name)
        assert env["GPULAB_GPUS"] == "1"
        assert env["CUDA_VISIBLE_DEVICES"].startswith("GPU-")
        devices.add(env["CUDA_VISIBLE_DEVICES"])
    assert len(devices) == 2, "two servers were given one device"
    held = {a.user: set(a.device_uuids) for a in ledger.open_allocations()}
    assert held["alice"] | held["bob"] == devices

    before = len(ledger.audit(limit=1000))
    denied = gpu_admin.api("POST", "/users/carol/server", json={"gpus": 1})
    assert denied.status_code == 409, denied.text
    assert "all 2 GPUs are in use" in denied.json()["message"]
    assert "carol" not in {a.user for a in ledger.open_allocations()}
    decisions = ledger.audit(limit=1000)
    assert len(decisions) == before + 1
    assert (decisions[0].action, decisions[0].user) == ("denied", "carol")
    assert gpu_admin.api("GET", "/users/carol").json()["servers"] == {}

    assert gpu_admin.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait_stopped(gpu_admin, "alice")
    closed = [a for a in ledger.allocations_since(3600) if a.user == "alice" and not a.is_open]
    assert closed and closed[-1].end_reason == "stopped"

    response = gpu_admin.api("POST", "/users/carol/server", json={"gpus": 1})
    assert response.status_code in (201, 202), response.text
    wait_ready(gpu_admin, "carol")
    assert server_environment("carol")["CUDA_VISIBLE_DEVICES"] in devices

    for name in ("bob", "carol"):
        gpu_admin.api("DELETE", f"/users/{name}/server")
        wait_stopped(gpu_admin, name)
    assert ledger.open_allocations() == []


def test_a_policy_limit_is_a_403_with_the_limit_named(gpu_admin, ledger):
    response = gpu_admin.api("POST", "/users/alice/server", json={"gpus": 2})
    assert response.status_code == 403, response.text
    assert "of your 1 GPU; this request for 2 would exceed it" in response.json()["message"]
    assert "alice" not in {a.user for a in ledger.open_allocations()}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gpus": -1}, "gpus must be a whole number >= 0, not -1"),
        ({"gpus": "two"}, "gpus must be a whole number >= 0, not 'two'"),
        ({"gpus": 1000}, "gpus=1000 is not offered here"),
        ({"profile": "16-gpus"}, "profile '16-gpus' is not offered here"),
        ({"profile": "cpu", "extra": 1}, "unknown spawn option 'extra'"),
        ({"profile": "x" * 20_000}, "too large"),
    ],
)
def test_bad_spawn_options_are_a_400_naming_the_field_and_change_nothing(
    gpu_admin, ledger, options, message
):
    before = (len(ledger.audit(limit=10_000)), len(ledger.allocations_since(3600)))
    response = gpu_admin.api("POST", "/users/carol/server", json=options)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert (len(ledger.audit(limit=10_000)), len(ledger.allocations_since(3600))) == before
    assert gpu_admin.api("GET", "/users/carol").json()["servers"] == {}
