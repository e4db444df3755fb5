"""Spawn-to-ready of gpulab's spawner against plain JupyterHub's, and a bare server's start.

    .venv/bin/python -m bench.spawn [--quick] [--users N] [--rounds R]

In one run:
- ``bare``: the floor, a bare ``jupyter-server`` (the venv's, unauthenticated, a free
  port, a temporary root folder) from process start to its first HTTP 200 on /api/status
  (``bare listen`` is when its port first accepted a connection);
- ``plain``: the hub of the embedded default with JupyterHub's ``SimpleLocalProcessSpawner``
  (``bench/plain_hub_config.py``); ``gpulab``: the embedded default as it is
  (``LocalGpulabSpawner``: quota admission, port reservation, server log files). Same hub,
  proxy, authenticator and services. For each: one user's POST /hub/api/users/NAME/server
  until the hub says ``ready`` (polled every 0.05 s; stopped between rounds), and N users
  at once until all are ready. ``first spawn`` is the first spawn after each hub start
  (imports and caches warming up), kept out of the ``spawn`` figures (skipped in
  ``--quick``).
- the ``spawn:`` rows split each measured spawn, by the hub's and the server's log lines:
  POST to the hub's Popen of the server; to the server's "is running at" (its last line
  before it answers HTTP); to the hub saying ``ready`` (the hub noticing, adding the
  route, and this client's 0.05 s poll).

The hubs run one at a time, each started as the e2e tests start one (``gpulab hub
--config``, a temporary state folder, a free port). The rounds run in blocks, each block a
bare start or two, then both hubs in turn, in the order plain, gpulab | gpulab, plain | ...
so that drift of a busy machine weighs on both alike. The last line is ``key=value``:
``spawn_ratio`` and ``concurrent_ratio`` are gpulab / plain medians, ``bare_ratio`` is
gpulab's spawn median / the bare start's.

Default: 5 rounds of each, 20 users at once (an estimated 10 to 15 minutes on 2 cores).
``--quick``: 3 rounds, 5 users at once, one N-at-once round per hub kind (about 2 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from gpulab_hub.ports import free_port
from tests.e2e.harness import REPO, HubSession, RunningHub

POLL = 0.05
BIN = Path(sys.executable).parent
CONFIGS = {
    "plain": REPO / "bench" / "plain_hub_config.py",
    "gpulab": REPO / "jupyterhub_config.py",
}
SPAWN_TIMEOUT = 300  # seconds for one spawn, or for N at once, to be ready


# --- Cleanup: whatever runs is stopped, even on an error, Ctrl-C or SIGTERM ------------

_live_hubs: list[RunningHub] = []


@dataclass
class BenchHub(RunningHub):
    """A RunningHub that is registered as soon as its process exists (stopped at exit)."""

    def __post_init__(self):
        _live_hubs.append(self)


def stop_hubs() -> None:
    while _live_hubs:
        _live_hubs.pop().stop()


def kill_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _terminate(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


# --- The floor: a bare jupyter-server -------------------------------------------------


def bare_start(folder: Path) -> tuple[float, float]:
    """(seconds to the port accepting a connection, seconds to the first HTTP 200)."""
    root = Path(tempfile.mkdtemp(prefix="bare-", dir=folder))
    port = free_port()
    command = [
        str(BIN / "jupyter-server"),
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    url = f"http://127.0.0.1:{port}/api/status"
    env = {**os.environ, "HOME": str(root)}
    http = requests.Session()
    listened = None
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        while True:
            now = time.perf_counter()
            if proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter-server exited with {proc.returncode}:\n"
                    + proc.stderr.read().decode(errors="replace")[-3000:]
                )
            if now - started > SPAWN_TIMEOUT:
                raise RuntimeError(f"jupyter-server did not answer in {SPAWN_TIMEOUT}s")
            if listened is None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=POLL),
                ):
                    listened = time.perf_counter() - started
            if listened is not None:
                with contextlib.suppress(requests.RequestException):
                    if http.get(url, timeout=5).status_code == 200:
                        return listened, time.perf_counter() - started
            time.sleep(POLL)
    finally:
        http.close()
        proc.stderr.close()
        kill_group(proc)
        shutil.rmtree(root, ignore_errors=True)


# --- A hub and its admin --------------------------------------------------------------


class Admin:
    """The hub's admin over the REST API, through the proxy, on one kept-alive session."""

    def __init__(self, hub: RunningHub, password: str):
        login = HubSession(hub.url)
        response = login.login("admin", password)
        if response.status_code != 302:
            raise RuntimeError(f"admin login failed: {response.status_code} {response.text[:500]}")
        token = login.create_token("admin")
        self.base = f"{hub.url}/hub/api"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"
        self.local = threading.local()  # one session per thread for concurrent calls

    def session(self) -> requests.Session:
        if threading.current_thread() is threading.main_thread():
            return self.http
        if not hasattr(self.local, "http"):
            self.local.http = requests.Session()
            self.local.http.headers.update(self.http.headers)
        return self.local.http

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session().request(method, f"{self.base}{path}", timeout=120, **kwargs)

    def servers(self) -> dict[str, dict]:
        """Every user's default server the hub has now (pending or ready), by user."""
        response = self.call("GET", "/users", params={"state": "active", "limit": 200})
        response.raise_for_status()
        body = response.json()
        users = body["items"] if isinstance(body, dict) else body
        return {u["name"]: u["servers"][""] for u in users if "" in u.get("servers", {})}

    def start(self, name: str) -> None:
        response = self.call("POST", f"/users/{name}/server")
        if response.status_code not in (201, 202):
            raise RuntimeError(f"spawn of {name}: {response.status_code} {response.text[:500]}")

    def stop_all(self, names: list[str]) -> None:
        with ThreadPoolExecutor(min(len(names), 20)) as pool:
            answers = list(pool.map(lambda n: self.call("DELETE", f"/users/{n}/server"), names))
        bad = [r for r in answers if r.status_code not in (202, 204)]
        if bad:
            raise RuntimeError(f"stop: {bad[0].status_code} {bad[0].text[:500]}")
        deadline = time.monotonic() + 120
        while set(names) & set(self.servers()):
            if time.monotonic() > deadline:
                raise RuntimeError("servers did not stop within 120 s")
            time.sleep(0.1)


def wait_ready(
    admin: Admin, names: list[str], started: float, posted: set[str]
) -> dict[str, float]:
    """Poll until every user's server is ready: seconds from ``started`` for each.

    ``posted``: the users whose POST has been answered (a server missing after that failed).
    """
    ready: dict[str, float] = {}
    missing_since: dict[str, float] = {}
    while len(ready) < len(names):
        now = time.perf_counter()
        if now - started > SPAWN_TIMEOUT:
            late = sorted(set(names) - set(ready))
            raise RuntimeError(f"not ready after {SPAWN_TIMEOUT}s: {late}")
        servers = admin.servers()
        seen = time.perf_counter() - started
        for name in names:
            if name in ready:
                continue
            server = servers.get(name)
            if server is None:
                # A failed spawn drops its server (allow for an answer racing this poll).
                if name in posted and now - missing_since.setdefault(name, now) > 2:
                    raise RuntimeError(f"the spawn of {name} failed (no server on the hub)")
            elif server.get("ready"):
                ready[name] = seen
            else:
                missing_since.pop(name, None)
        time.sleep(POLL)
    return ready


def single_spawn(admin: Admin, name: str) -> tuple[float, float]:
    """(seconds from the POST to ready, the POST's wall-clock time)."""
    posted_at = time.time()
    started = time.perf_counter()
    response = admin.call("POST", f"/users/{name}/server")
    if response.status_code not in (201, 202):
        raise RuntimeError(f"spawn of {name}: {response.status_code} {response.text[:500]}")
    while True:
        if time.perf_counter() - started > SPAWN_TIMEOUT:
            raise RuntimeError(f"{name} not ready after {SPAWN_TIMEOUT}s")
        answer = admin.call("GET", f"/users/{name}")
        answer.raise_for_status()
        server = answer.json()["servers"].get("")
        if server is None:
            raise RuntimeError(f"the spawn of {name} failed (no server on the hub)")
        if server.get("ready"):
            elapsed = time.perf_counter() - started
            admin.stop_all([name])
            return elapsed, posted_at
        time.sleep(POLL)


def concurrent_spawn(admin: Admin, names: list[str]) -> dict[str, float]:
    barrier = threading.Barrier(len(names))

    posted: set[str] = set()

    def start(name):
        barrier.wait()
        admin.start(name)
        posted.add(name)

    started = time.perf_counter()
    # The POSTs return only once their spawns are pending; poll alongside them.
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(start, n) for n in names]
        try:
            ready = wait_ready(admin, names, started, posted)
        finally:
            for future in futures:
                future.result()
    admin.stop_all(names)
    return ready


# --- Where a spawn's time goes, from the hub's and the server's own log lines ----------

LOG_LINE = re.compile(r"^\[[A-Z] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
PHASES = ("POST -> Popen", "Popen -> server up", "server up -> ready")


def _first(lines: list[str], marker: str, after: float) -> float | None:
    """Wall-clock time of the first log line holding ``marker`` at or after ``after``."""
    for line in lines:
        match = LOG_LINE.match(line)
        if match and marker in line:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if at >= after - 0.002:  # the log's milliseconds are truncated
                return at
    return None


def spawn_phases(
    hub_lines: list[str], server_lines: list[str], posted_at: float, elapsed: float
) -> tuple[float, float, float] | None:
    """Split one spawn at the hub's Popen ("Spawning ...") and the server's "is running
    at:" (its last line before it serves HTTP). None where a line is missing."""
    popen = _first(hub_lines, "] Spawning ", posted_at)
    if popen is None:
        return None
    up = _first(server_lines, " is running at:", popen)
    if up is None:
        return None
    return popen - posted_at, up - popen, posted_at + elapsed - up


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


@dataclass
class HubState:
    """One kind of hub: its config and state folder, kept across its restarts."""

    kind: str
    state_dir: Path
    password: str | None = None
    users_created: bool = False


def run_block(
    state: HubState,
    users: list[str],
    single_rounds: int,
    concurrent_rounds: int,
    results: dict[str, list[float]],
    warm_up: bool,
) -> None:
    gpulab = str(BIN / "gpulab")
    command = [gpulab, "hub", "--config", str(CONFIGS[state.kind])]
    started = time.perf_counter()
    hub = BenchHub.start(state.state_dir, free_port(), command=command)
    results[f"{state.kind} hub start"].append(time.perf_counter() - started)
    try:
        state.password = state.password or hub.printed_admin_password
        if not state.password:
            raise RuntimeError(f"the {state.kind} hub printed no admin password")
        admin = Admin(hub, state.password)
        if not state.users_created:
            created = admin.call("POST", "/users", json={"usernames": users})
            if created.status_code not in (201, 409):
                raise RuntimeError(f"creating users: {created.status_code} {created.text[:500]}")
            state.users_created = True
        if warm_up:
            elapsed, _ = single_spawn(admin, users[0])
            results[f"{state.kind} first spawn"].append(elapsed)
            progress(f"{state.kind} first spawn {elapsed:.2f} s")
        spawns = []
        for _ in range(single_rounds):
            spawns.append(single_spawn(admin, users[0]))
            results[f"{state.kind} spawn"].append(spawns[-1][0])
            progress(f"{state.kind} spawn {spawns[-1][0]:.2f} s")
        for _ in range(concurrent_rounds):
            ready = concurrent_spawn(admin, users)
            results[f"{state.kind} {len(users)} at once"].append(max(ready.values()))
            results[f"{state.kind} {len(users)} at once, each"].extend(ready.values())
            progress(f"{state.kind} {len(users)} at once {max(ready.values()):.2f} s")
        # gpulab's servers write to their own log file, plain ones to the hub's output.
        server_log = state.state_dir / "logs" / "servers" / f"{users[0]}.log"
        for elapsed, posted_at in spawns:
            hub_lines = list(hub.lines)
            server_lines = (
                server_log.read_text(errors="replace").splitlines()
                if state.kind == "gpulab"
                else hub_lines
            )
            split = spawn_phases(hub_lines, server_lines, posted_at, elapsed)
            if split is None:
                progress(f"{state.kind}: no log lines to split a spawn at")
                continue
            for phase, seconds in zip(PHASES, split, strict=True):
                results[f"{state.kind} spawn: {phase}"].append(seconds)
    except BaseException:
        tail = hub.output[-4000:]
        if tail:
            print(f"--- the {state.kind} hub's last output ---\n{tail}", file=sys.stderr)
        raise
    finally:
        hub.stop()
        with contextlib.suppress(ValueError):
            _live_hubs.remove(hub)


def share(total: int, blocks: int, block: int) -> int:
    """Rounds of ``total`` that fall to ``block`` of ``blocks`` (round-robin)."""
    return len(range(block, total, blocks))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 2 minutes on 2 cores")
    parser.add_argument("--users", type=int, help="users spawning at once (20; --quick 5)")
    parser.add_argument("--rounds", type=int, help="rounds of each measurement (5; --quick 3)")
    args = parser.parse_args(argv)
    n_users = args.users or (5 if args.quick else 20)
    rounds = args.rounds or (3 if args.quick else 5)
    concurrent_rounds = 1 if args.quick else rounds
    if not 1 <= n_users <= 150 or rounds < 1:
        parser.error("--users must be 1 to 150 and --rounds at least 1")
    blocks = 2 if rounds > 1 else 1  # plain, gpulab | gpulab, plain

    signal.signal(signal.SIGTERM, _terminate)
    users = [f"bench{i:03d}" for i in range(n_users)]
    results: dict[str, list[float]] = defaultdict(list)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpulab-bench-spawn-") as tmp:
        folder = Path(tmp)
        states = {kind: HubState(kind, folder / kind / "state") for kind in CONFIGS}
        try:
            for block in range(blocks):
                for _ in range(share(rounds, blocks, block)):
                    listened, answered = bare_start(folder)
                    results["bare listen"].append(listened)
                    results["bare start"].append(answered)
                    progress(f"bare start {answered:.2f} s (listening at {listened:.2f} s)")
                order = ["plain", "gpulab"] if block % 2 == 0 else ["gpulab", "plain"]
                for kind in order:
                    run_block(
                        states[kind],
                        users,
                        share(rounds, blocks, block),
                        share(concurrent_rounds, blocks, block),
                        results,
                        warm_up=not args.quick,
                    )
        finally:
            stop_hubs()

    header = f"{'what':<34} {'n':>4} {'median s':>9} {'p95 s':>7} {'min s':>7}"
    print(header)
    print("-" * len(header))
    order = ["bare listen", "bare start"] + [
        f"{kind} {what}"
        for what in (
            "hub start",
            "first spawn",
            "spawn",
            *(f"spawn: {phase}" for phase in PHASES),
            f"{n_users} at once",
            f"{n_users} at once, each",
        )
        for kind in CONFIGS
    ]
    for what in order:
        samples = results[what]
        if not samples:
            continue
        print(
            f"{what:<34} {len(samples):>4} {statistics.median(samples):>9.3f} "
            f"{percentile(samples, 0.95):>7.3f} {min(samples):>7.3f}"
        )

    def median(what: str) -> float:
        return statistics.median(results[what]) if results[what] else float("nan")

    bare = median("bare start")
    plain, gpulab = median("plain spawn"), median("gpulab spawn")
    plain_n, gpulab_n = median(f"plain {n_users} at once"), median(f"gpulab {n_users} at once")
    summary = {
        "spawn_ratio": round(gpulab / plain, 3),
        "concurrent_ratio": round(gpulab_n / plain_n, 3),
        "bare_ratio": round(gpulab / bare, 3),
        "plain_bare_ratio": round(plain / bare, 3),
        "bare_s": round(bare, 3),
        "plain_spawn_s": round(plain, 3),
        "gpulab_spawn_s": round(gpulab, 3),
        "plain_concurrent_s": round(plain_n, 3),
        "gpulab_concurrent_s": round(gpulab_n, 3),
        "plain_notice_s": round(median("plain spawn: server up -> ready"), 3),
        "gpulab_notice_s": round(median("gpulab spawn: server up -> ready"), 3),
        "users": n_users,
        "rounds": rounds,
        "concurrent_rounds": concurrent_rounds,
        "run_s": round(time.perf_counter() - began, 1),
    }
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
