"""Fault injection against a real hub, proxy, ledger and single-user servers.

Fixtures
- ``fault_hub`` (module): a hub of ``fault_hub_config.py`` (2 static GPUs, 1 each; users
  named ``hang*`` get a server that never listens, ``slow*`` one that starts late), with
  the SQLite ledger of the embedded default, started as the e2e tests start one;
- ``fault_admin`` (module): its admin, logged in, with an API token;
- ``ledger``: the hub's ledger, opened by the test process.

Helpers
- ``assert_consistent(admin, ledger)``: the invariant every test ends on: the ledger's open
  allocations are exactly the hub's servers (running or pending), no device is held by
  two allocations, the ledger's own ``verify()`` is clean, and every running GPU server's
  process sees exactly its allocation's devices;
- ``server_processes(state_dir, user)``: the live processes a user's server started from
  this hub (found by their ``JUPYTERHUB_USER`` and home under ``state_dir``);
- ``wait_ready``, ``wait_stopped``: the hub's view of a user's default server.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import pytest

from gpulab.quota.ledger import Ledger
from tests.e2e.harness import HubSession, RunningHub
from tests.e2e.test_gpu_spawns import wait_ready, wait_stopped  # noqa: F401 - re-exported
from tests.waiting import poll

CONFIG = Path(__file__).with_name("fault_hub_config.py")
USERS = ["ivy", "jon", "kim", "slow1", "slow2", "hang1"]


def start_fault_hub(state_dir: Path, port: int | None = None) -> RunningHub:
    """``gpulab hub --config tests/reliability/fault_hub_config.py`` on ``state_dir``."""
    return RunningHub.start_with_config(state_dir, str(CONFIG), port)


def hub_ledger(state_dir: Path) -> Ledger:
    url_file = state_dir / "ledger-url"
    url = url_file.read_text().strip() if url_file.exists() else None
    return Ledger(url or f"sqlite:///{state_dir / 'ledger.sqlite'}")


@pytest.fixture(scope="module")
def fault_hub(tmp_path_factory):
    hub = start_fault_hub(tmp_path_factory.mktemp("fault-hub") / "state")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def fault_admin(fault_hub) -> HubSession:
    admin = fault_hub.admin_session()
    response = admin.api("POST", "/users", json={"usernames": USERS})
    assert response.status_code == 201, response.text
    return admin


@pytest.fixture
def ledger(fault_hub):
    with hub_ledger(fault_hub.state_dir) as ledger:
        yield ledger


def hub_servers(admin: HubSession) -> dict[str, dict]:
    """The default server of every user that has one (running or pending), by user."""
    response = admin.api("GET", "/users", params={"state": "active"})
    response.raise_for_status()
    return {u["name"]: u["servers"][""] for u in response.json() if "" in u["servers"]}


def server_processes(state_dir: Path, user: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env.get("JUPYTERHUB_USER") == user and env.get("HOME", "").startswith(
                str(state_dir)
            ):
                found.append(proc)
    return found


def wait_no_server_process(state_dir: Path, user: str, timeout: float = 30) -> None:
    poll(
        lambda: not server_processes(state_dir, user),
        timeout=timeout,
        what=f"the server processes of {user} to end",
    )


def assert_consistent(admin: HubSession, ledger: Ledger, state_dir: Path) -> None:
    servers = hub_servers(admin)
    allocations = ledger.open_allocations()
    assert sorted((a.user, a.server) for a in allocations) == sorted(
        (name, "") for name in servers
    ), (allocations, servers)
    held = [uuid for a in allocations for uuid in a.device_uuids]
    assert len(held) == len(set(held)), f"a device is held twice: {allocations}"
    assert ledger.verify() == []
    for allocation in allocations:
        if not servers[allocation.user]["ready"]:
            continue
        [env] = {
            tuple(sorted(p.environ().get("CUDA_VISIBLE_DEVICES", "").split(",")))
            for p in server_processes(state_dir, allocation.user)
            if "jupyterhub-singleuser" in " ".join(p.cmdline())
        }
        assert set(env) - {""} == set(allocation.device_uuids)


def stop_all(admin: HubSession, state_dir: Path) -> None:
    """Stop every server of the hub (the next test starts from an idle hub)."""
    names = list(hub_servers(admin))
    for name in names:
        admin.api("DELETE", f"/users/{name}/server")
    for name in names:
        wait_stopped(admin, name)
        wait_no_server_process(state_dir, name)
