"""A load test of the embedded default: N simulated users, ramped, each doing a whole session.

    .venv/bin/python -m bench.hub_load [--quick] [--users N] [--rate R]

The hub is started as ``make run`` starts it (``tests/e2e/harness.py`` ``RunningHub``: a
temporary state folder, a free port). Before the clock starts, the admin creates the N
users (``POST /hub/api/users``) and each gets a password (signs up at /hub/signup, the
admin approves at /hub/authorize/NAME, as NativeAuthenticator wants). Then the users
arrive ``--rate`` a second, each in its own thread, and each, as a person with a browser:

1. ``login``: GET /hub/login, POST the form with its ``_xsrf`` token (302 wanted), then
   makes an API token with that cookie (what JupyterLab's hub extension does);
2. ``spawn``: POST /hub/api/users/NAME/server (cookie + XSRF header), then reads the
   hub's progress event stream (/server/progress) until ``ready`` (spawn time: POST to
   the ready event);
3. ``kernel``: POST /user/NAME/api/kernels through the proxy (the server's REST API);
4. ``execute``: opens /user/NAME/api/kernels/ID/channels with ``tornado.websocket`` and
   sends a Jupyter protocol ``execute_request`` (``21 * 2``); the time is from the send
   to both the ``execute_reply`` and the ``execute_result`` "42" (the first cell also
   waits for the kernel to be up);
5. ``stop``: DELETE /hub/api/users/NAME/server, then polls until the server is gone.

A step that fails is an error (counted by kind, the first message of each kind shown)
and the user goes on to stop its server. A monitor samples the RSS of the hub
(``jupyterhub``) and of the proxy (``configurable-http-proxy``, pid from the state
folder's proxy.pid) every second, and counts the servers running at once.

Output: one row per step (n, p50, p95, max seconds), the errors, the memory, then one
``key=value`` line: ``users``, ``p50_spawn_s``, ``p95_spawn_s``, ``p50_execute_s``,
``p95_execute_s``, ``errors``, ``open_allocations`` (ledger rows left open after every
user stopped: 0 wanted), ``hub_rss_mb`` / ``proxy_rss_mb`` (peaks), ...

Default: 50 users at 0.5 a second (a workshop starting: everyone in 100 s; about 5
minutes on 2 cores); ``--quick``: 8 users at 2 a second (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from gpulab.quota.ledger import Ledger
from gpulab_hub.ports import free_port
from tests.e2e.harness import HubSession, RunningHub

PASSWORD = "load-test-password-42"
STEP_TIMEOUT = 300  # seconds for any one step (a spawn waits at most this long)
STEPS = ("login", "spawn", "kernel", "execute", "stop", "session")


class StepError(RuntimeError):
    """A failed step: ``kind`` groups errors of one cause in the report."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# --- Setting up the users (not timed) --------------------------------------------------


def create_users(hub: RunningHub, names: list[str]) -> None:
    admin = hub.admin_session()
    response = admin.api("POST", "/users", json={"usernames": names})
    if response.status_code != 201:
        raise RuntimeError(f"creating users: {response.status_code} {response.text[:500]}")

    def sign_up(name: str) -> None:
        visitor = requests.Session()
        visitor.get(f"{hub.url}/hub/signup", timeout=60).raise_for_status()
        answer = visitor.post(
            f"{hub.url}/hub/signup",
            data={
                "username": name,
                "signup_password": PASSWORD,
                "signup_password_confirmation": PASSWORD,
                "_xsrf": visitor.cookies.get("_xsrf"),
            },
            timeout=60,
        )
        answer.raise_for_status()
        approve = admin.http.get(f"{hub.url}/hub/authorize/{name}", timeout=60)
        approve.raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(sign_up, names))


# --- One simulated user ------------------------------------------------------------------


class SimulatedUser:
    def __init__(self, hub_url: str, name: str):
        self.hub_url = hub_url
        self.name = name
        self.session = HubSession(hub_url)
        self.times: dict[str, float] = {}

    def timed(self, step: str, action):
        started = time.perf_counter()
        result = action()
        self.times[step] = time.perf_counter() - started
        return result

    def xsrf_headers(self) -> dict[str, str]:
        return {"X-XSRFToken": self.session.http.cookies.get("_xsrf", "")}

    def run(self) -> None:
        """The whole session; raises StepError at the first failed step (after stopping
        the server if it was asked for)."""
        started = time.perf_counter()
        self.timed("login", self.login)
        try:
            self.timed("spawn", self.spawn)
            kernel_id = self.timed("kernel", self.start_kernel)
            self.timed("execute", lambda: asyncio.run(self.execute(kernel_id)))
        finally:
            self.timed("stop", self.stop)
        self.times["session"] = time.perf_counter() - started

    def login(self) -> None:
        http = self.session.http
        try:
            http.get(f"{self.hub_url}/hub/login", timeout=STEP_TIMEOUT).raise_for_status()
            response = http.post(
                f"{self.hub_url}/hub/login",
                data={
                    "username": self.name,
                    "password": PASSWORD,
                    "_xsrf": http.cookies.get("_xsrf"),
                },
                allow_redirects=False,
                timeout=STEP_TIMEOUT,
            )
        except requests.RequestException as e:
            raise StepError("login: connection", str(e)) from e
        if response.status_code != 302:
            raise StepError(f"login: HTTP {response.status_code}", response.text[:300])
        try:
            self.session.create_token(self.name)
        except requests.RequestException as e:
            raise StepError("login: token", str(e)) from e

    def spawn(self) -> None:
        http = self.session.http
        base = f"{self.hub_url}/hub/api/users/{self.name}/server"
        response = http.post(base, headers=self.xsrf_headers(), json={}, timeout=STEP_TIMEOUT)
        if response.status_code not in (201, 202):
            raise StepError(f"spawn: HTTP {response.status_code}", response.text[:300])
        if response.status_code == 201:
            return  # already ready
        with http.get(
            f"{base}/progress", headers=self.xsrf_headers(), stream=True, timeout=STEP_TIMEOUT
        ) as events:
            if events.status_code != 200:
                raise StepError(f"spawn progress: HTTP {events.status_code}", events.text[:300])
            for line in events.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:") :])
                if event.get("ready"):
                    return
                if event.get("failed"):
                    raise StepError("spawn: failed", event.get("message", "")[:300])
        raise StepError("spawn: progress ended", "the event stream ended before ready")

    def start_kernel(self) -> str:
        response = requests.post(
            f"{self.hub_url}/user/{self.name}/api/kernels",
            headers={"Authorization": f"token {self.session.token}"},
            json={},
            timeout=STEP_TIMEOUT,
        )
        if response.status_code != 201:
            raise StepError(f"kernel: HTTP {response.status_code}", response.text[:300])
        return response.json()["id"]

    async def execute(self, kernel_id: str) -> None:
        ws_url = self.hub_url.replace("http://", "ws://", 1)
        request = HTTPRequest(
            f"{ws_url}/user/{self.name}/api/kernels/{kernel_id}/channels",
            headers={"Authorization": f"token {self.session.token}"},
            request_timeout=STEP_TIMEOUT,
            connect_timeout=STEP_TIMEOUT,
        )
        try:
            ws = await websocket_connect(request)
        except Exception as e:
            raise StepError("execute: websocket connect", repr(e)) from e
        try:
            msg_id = uuid.uuid4().hex
            await ws.write_message(json.dumps(execute_request(msg_id, self.name, "21 * 2")))
            reply = result = None
            deadline = time.monotonic() + STEP_TIMEOUT
            while reply is None or result is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepError("execute: timeout", f"no reply in {STEP_TIMEOUT}s")
                raw = await asyncio.wait_for(ws.read_message(), left)
                if raw is None:
                    raise StepError("execute: websocket closed", "closed before the reply")
                message = json.loads(raw)
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = message["msg_type"]
                if kind == "execute_reply":
                    reply = message["content"]
                elif kind == "execute_result":
                    result = message["content"]["data"].get("text/plain")
                elif kind == "error":
                    raise StepError("execute: error", message["content"].get("evalue", ""))
            if reply.get("status") != "ok" or result != "42":
                raise StepError("execute: wrong answer", f"{reply.get('status')} {result!r}")
        finally:
            ws.close()

    def stop(self) -> None:
        http = self.session.http
        response = http.delete(
            f"{self.hub_url}/hub/api/users/{self.name}/server",
            headers=self.xsrf_headers(),
            timeout=STEP_TIMEOUT,
        )
        if response.status_code not in (202, 204, 400):  # 400: no server (spawn failed)
            raise StepError(f"stop: HTTP {response.status_code}", response.text[:300])
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            me = self.session.api("GET", f"/users/{self.name}")
            if me.status_code == 200 and not me.json().get("servers"):
                return
            if time.monotonic() > deadline:
                raise StepError("stop: timeout", f"server still listed after {STEP_TIMEOUT}s")
            time.sleep(1.0)  # once a second: the checking must not become the load measured


def execute_request(msg_id: str, username: str, code: str) -> dict:
    """A Jupyter messaging protocol (5.3) execute_request for the shell channel."""
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": username,
            "session": uuid.uuid4().hex,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


# --- Watching the hub --------------------------------------------------------------------


class Monitor(threading.Thread):
    """Samples the hub's and the proxy's RSS, and the single-user servers alive, each second."""

    def __init__(self, hub: RunningHub):
        super().__init__(daemon=True)
        self.hub = hub
        self.done = threading.Event()
        self.rss: dict[str, list[float]] = defaultdict(list)
        self.servers: list[int] = []

    def processes(self) -> dict[str, psutil.Process]:
        found = {}
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.hub.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if any(part.endswith("/jupyterhub") for part in child.cmdline()[:2]):
                        found["hub"] = child
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid = int((self.hub.state_dir / "proxy.pid").read_text().strip())
            found["proxy"] = psutil.Process(pid)
        return found

    def run(self) -> None:
        procs = {}
        while not self.done.wait(1.0):
            if len(procs) < 2:
                procs = self.processes()
            for name, proc in procs.items():
                with contextlib.suppress(psutil.Error):
                    self.rss[name].append(proc.memory_info().rss / 2**20)
            if "hub" in procs:
                with contextlib.suppress(psutil.Error):
                    self.servers.append(
                        sum(
                            "jupyterhub-singleuser" in " ".join(p.cmdline())
                            for p in procs["hub"].children(recursive=True)
                        )
                    )


# --- The run -----------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def run_load(hub: RunningHub, names: list[str], rate: float):
    users = [SimulatedUser(hub.url, name) for name in names]
    errors: list[tuple[str, str]] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        time.sleep(index / rate)  # the ramp
        user = users[index]
        try:
            user.run()
        except StepError as e:
            with lock:
                errors.append((e.kind, f"{user.name}: {e}"))
            progress(f"error: {e.kind}: {user.name}: {str(e)[:200]}")
        except Exception as e:  # noqa: BLE001 - a load test reports every failure
            with lock:
                errors.append((f"unexpected {type(e).__name__}", f"{user.name}: {e!r}"))
            progress(f"error: {user.name}: {e!r}"[:300])
        done = sum(1 for u in users if "stop" in u.times)
        if done % max(1, len(users) // 5) == 0:
            progress(f"{done}/{len(users)} sessions done, {len(errors)} errors")

    started = time.perf_counter()
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(one, range(len(users))))
    return users, errors, time.perf_counter() - started


def keep_logs(hub: RunningHub, folder: Path) -> None:
    """The hub's output (with the proxy's) and the state folder's logs (the servers')."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hub-output.log").write_text(hub.output)
    shutil.copytree(hub.state_dir / "logs", folder / "logs", dirs_exist_ok=True)
    progress(f"logs kept in {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 users, about a minute")
    parser.add_argument("--users", type=int, help="simulated users (default 50, quick 8)")
    parser.add_argument("--rate", type=float, help="users arriving a second (default 0.5, quick 2)")
    parser.add_argument(
        "--logs", type=Path, help="keep the hub's output and the servers' logs in this folder"
    )
    args = parser.parse_args(argv)
    count = args.users or (8 if args.quick else 50)
    rate = args.rate or (2.0 if args.quick else 0.5)
    if count < 1 or rate <= 0:
        parser.error("--users must be at least 1 and --rate above 0")
    live: list[RunningHub] = []

    def terminate(signum, _frame):
        # The users' threads may wait minutes on a step: stop the hub (and so its servers)
        # and leave now.
        for hub in live:
            hub.stop()
        progress(f"stopped by signal {signum}")
        os._exit(1)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    names = [f"load{i:03d}" for i in range(count)]

    with tempfile.TemporaryDirectory(prefix="gpulab-hub-load-") as folder:
        load_avg = psutil.getloadavg()[0]
        progress(f"starting the hub (load average {load_avg:.2f}, {psutil.cpu_count()} cores)")
        hub_started = time.perf_counter()
        hub = RunningHub.start(Path(folder) / "state", free_port())
        live.append(hub)
        try:
            hub_start_s = time.perf_counter() - hub_started
            progress(f"creating {count} users")
            create_users(hub, names)
            monitor = Monitor(hub)
            monitor.start()
            progress(f"{count} users arriving {rate:g} a second")
            users, errors, run_s = run_load(hub, names, rate)
            monitor.done.set()
            monitor.join()
            # Every session stopped its server (failed ones too): the ledger must hold
            # no open allocation now.
            with Ledger(f"sqlite:///{hub.state_dir / 'ledger.sqlite'}") as ledger:
                left_open = ledger.open_allocations()
        finally:
            hub.stop()
            if args.logs:
                keep_logs(hub, args.logs)

    print(f"{'step':<10} {'n':>4} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    print("-" * 42)
    figures: dict[str, object] = {"users": count}
    samples = {step: [u.times[step] for u in users if step in u.times] for step in STEPS}
    for step in STEPS:
        values = samples[step]
        if not values:
            print(f"{step:<10} {0:>4}")
            continue
        p50, p95 = statistics.median(values), percentile(values, 95)
        print(f"{step:<10} {len(values):>4} {p50:>8.3f} {p95:>8.3f} {max(values):>8.3f}")
    kinds = Counter(kind for kind, _ in errors)
    print(f"errors: {len(errors)}")
    for kind, n in kinds.most_common():
        first = next(message for k, message in errors if k == kind)
        print(f"  {n} x {kind}: {first[:300]}")
    for name in ("hub", "proxy"):
        rss = monitor.rss.get(name) or [0.0]
        print(f"{name} RSS MiB: start {rss[0]:.0f}, peak {max(rss):.0f}, end {rss[-1]:.0f}")
    print(f"servers running at once: peak {max(monitor.servers, default=0)}")
    print(f"ledger allocations left open: {len(left_open)} {[a.user for a in left_open]}")

    def p(step: str, q: int) -> float | str:
        values = samples[step]
        if not values:
            return "nan"
        return round(statistics.median(values) if q == 50 else percentile(values, q), 3)

    figures.update(
        p50_spawn_s=p("spawn", 50),
        p95_spawn_s=p("spawn", 95),
        p50_execute_s=p("execute", 50),
        p95_execute_s=p("execute", 95),
        p95_kernel_s=p("kernel", 95),
        p95_session_s=p("session", 95),
        errors=len(errors),
        open_allocations=len(left_open),
        hub_rss_mb=round(max(monitor.rss.get("hub") or [0.0])),
        proxy_rss_mb=round(max(monitor.rss.get("proxy") or [0.0])),
        peak_servers=max(monitor.servers, default=0),
        rate_per_s=rate,
        hub_start_s=round(hub_start_s, 2),
        run_s=round(run_s, 1),
        cores=psutil.cpu_count(),
        load_avg=round(load_avg, 2),
    )
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
