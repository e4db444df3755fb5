"""20 users spawn at once: every server its own port, every /user/<name>/ its own server.

JupyterHub's local spawner draws ports that servers bind later; under concurrent spawns
two servers could draw one port and the hub would route a user to someone else's server.
Each round starts 20 servers together, then checks the proxy's routes (one distinct port
per user) and reads a file from each user's home through /user/<name>/.
"""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import psutil
import pytest

from gpulab.priority import session_group

pytestmark = pytest.mark.e2e

USERS = [f"spawner{i:02d}" for i in range(20)]
ROUNDS = 3


def wait_for(check, timeout, what):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def server_of(admin, name):
    response = admin.api("GET", f"/users/{name}")
    response.raise_for_status()
    return response.json()["servers"].get("")


def the_embedded_defaults_server_settings_hold(hub, admin, name):
    """A server of ``make run``'s hub runs in its home at niceness 10, each thread and
    its session (the hub and proxy first), and its JupyterLab can't install extensions
    into the hub's shared environment."""
    pid = int((hub.state_dir / "servers" / f"{name}.pid").read_text())
    server = psutil.Process(pid)
    assert {os.getpriority(os.PRIO_PROCESS, t.id) for t in server.threads()} == {
        min(19, os.nice(0) + 10)}
    group = session_group(pid)  # its session too, where autogroups share the CPU
    assert group is None or group.endswith("nice 10"), group
    assert server.cwd() == str(hub.state_dir / "home" / name)
    page = admin.get_as_user(f"/user/{name}/lab")
    assert page.status_code == 200, page.status_code
    found = re.search(
        r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
        page.text, re.S)
    assert found, page.text[:500]
    manager = json.loads(found.group(1))["extensionManager"]
    assert manager["name"] == "read-only" and manager["can_install"] is False, manager


@pytest.mark.parametrize("round_number", range(1, ROUNDS + 1))
def test_twenty_concurrent_spawns_get_their_own_servers(hub, admin, round_number):
    created = admin.api("POST", "/users", json={"usernames": USERS})
    assert created.status_code in (201, 409), created.text
    for name in USERS:
        home = hub.state_dir / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        (home / "owner.txt").write_text(name)

    with ThreadPoolExecutor(len(USERS)) as pool:
        responses = list(pool.map(lambda n: admin.api("POST", f"/users/{n}/server"), USERS))
    assert all(r.status_code in (201, 202) for r in responses), [r.text for r in responses]

    def all_ready():
        return all((server_of(admin, n) or {}).get("ready") for n in USERS)

    wait_for(all_ready, 240, "all 20 servers to be ready")
    if round_number == 1:
        the_embedded_defaults_server_settings_hold(hub, admin, USERS[0])

    routes = admin.api("GET", "/proxy").json()
    targets = {
        spec["routespec"].strip("/").split("/")[-1]: urlparse(spec["target"]).port
        for spec in routes.values()
        if spec["routespec"].startswith("/user/")
    }
    assert set(targets) >= set(USERS)
    ports = [targets[n] for n in USERS]
    assert len(set(ports)) == len(USERS), f"servers share ports: {sorted(ports)}"

    def read_owner(name):
        return admin.get_as_user(f"/user/{name}/api/contents/owner.txt?content=1")

    with ThreadPoolExecutor(8) as pool:
        answers = dict(zip(USERS, pool.map(read_owner, USERS), strict=True))
    for name, answer in answers.items():
        assert answer.status_code == 200, f"/user/{name}/ answered {answer.status_code}"
        assert answer.json()["content"] == name, f"/user/{name}/ reached another user's server"

    with ThreadPoolExecutor(len(USERS)) as pool:
        stops = list(pool.map(lambda n: admin.api("DELETE", f"/users/{n}/server"), USERS))
    assert all(r.status_code in (202, 204) for r in stops), [r.text for r in stops]
    wait_for(lambda: not any(server_of(admin, n) for n in USERS), 120, "all servers to stop")
