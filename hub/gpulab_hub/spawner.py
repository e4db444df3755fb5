"""The local-process spawner of the embedded default (``LocalGpulabSpawner``).

It starts each user's JupyterLab as a process of the hub's own OS account, in a home
folder under the state folder. It isolates nothing between users (same account, same
files permissions); production isolation comes from the container, systemd or batch
spawners of the scale-out deployments. What it adds over JupyterHub's
``SimpleLocalProcessSpawner``:

- one port per server, never handed out twice (see ``gpulab_hub.ports``): a server that
  could not bind its port is restarted on another one, and the hub is told the port only
  once our own process listens on it;
- each server's output goes to ``<log_dir>/<user>.log`` instead of the hub's terminal;
- each server's pid goes to ``<pid_dir>/<user>[-<server>].pid`` as soon as it starts:
  JupyterHub saves a spawner's pid only once the spawn is done, so a hub killed during a
  spawn would leave that server running unknown to it (and its GPUs granted again); the
  next poll or start of that server finds the file and ends the orphan;
- each server and its session at a lower CPU priority (``nice``), set by the hub once
  the server has started: no Python runs in the forked child (see
  ``gpulab.priority``), so the home is entered through Popen's ``cwd``;
- ``--allow-root`` when the hub runs as root (Jupyter server refuses root otherwise);
- gpulab's quota (``QuotaSpawnerMixin``): the spawn form's profiles, admission by the
  ledger, ``CUDA_VISIBLE_DEVICES``, release on stop.

Override points: ``home_dir_template``, ``log_dir``, ``bind_attempts``, ``nice``
(config), and the usual ``Spawner`` hooks (``pre_spawn_hook``, ``get_env``) for later
gpulab layers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Integer, TraitError, Unicode, default, validate

from gpulab.priority import lower_priority
from gpulab_hub.ports import PortBindError, hub_ports, wait_for_listener
from gpulab_hub.quota_spawner import QuotaSpawnerMixin


class PortSafeLocalProcessSpawner(SimpleLocalProcessSpawner):
    log_dir = Unicode(
        "",
        config=True,
        help="""Folder for each server's output (<log_dir>/<username>.log).

        Empty (the default) leaves the output on the hub's own stdout and stderr.""",
    )

    bind_attempts = Integer(
        3,
        config=True,
        help="""How many ports to try before a spawn fails because its server exited
        before listening (each try gets a fresh port). Must be at least 1.""",
    )

    pid_dir = Unicode(
        "",
        config=True,
        help="""Folder for each server's pid file, written as soon as it starts (see the
        module). Empty (the default) writes none: a hub killed during a spawn then
        leaves that server running.""",
    )

    nice = Integer(
        0,
        config=True,
        help="""Niceness added to each server (and so to its kernels) at its start, 0 to
        19. The embedded default uses 10: users' servers and kernels then share the CPU
        among themselves, while the hub and its proxy, which answer everyone, are served
        first. On 2 cores with 40 servers starting at once, equal priority let the
        proxy's API miss the hub's 3 s connect timeout, failing spawns and stops
        (bench.hub_load).""",
    )

    @validate("nice")
    def _valid_nice(self, proposal):
        value = proposal["value"]
        if not 0 <= value <= 19:
            raise TraitError(f"{type(self).__name__}.nice must be 0 to 19, not {value}")
        return value

    def make_preexec_fn(self, name):
        # No Python between fork and exec: the hub is threaded, and code run there can
        # deadlock the child. The home is made and entered through Popen (``cwd``), and
        # the niceness is set from here once the server has started.
        return None

    @default("cmd")
    def _default_cmd(self):
        # The hub may run from a virtual environment that is not on PATH (make run calls
        # .venv/bin/gpulab directly): use the single-user command installed beside it.
        beside = Path(sys.executable).with_name("jupyterhub-singleuser")
        return [str(beside)] if beside.exists() else ["jupyterhub-singleuser"]

    def get_env(self):
        env = super().get_env()
        # Kernels and terminals find this environment's python first.
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
        return env

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0:
            args.append("--allow-root")
        return args

    async def start(self):
        if self.bind_attempts < 1:
            raise ValueError(
                f"LocalGpulabSpawner.bind_attempts must be at least 1, not {self.bind_attempts}"
            )
        self._end_orphan()
        for attempt in range(1, self.bind_attempts + 1):
            port = self.port = hub_ports.reserve(self.ip or "127.0.0.1")
            try:
                return await self._start_on_reserved_port()
            except PortBindError as e:
                await self._kill_failed_process()
                if not e.exited or attempt == self.bind_attempts:
                    raise RuntimeError(
                        f"The server of {self.user.name} did not start: {e}. "
                        f"See {self._log_path() or 'the hub log'}."
                    ) from e
                self.log.warning(
                    "Server of %s exited before binding port %s (attempt %d of %d); "
                    "retrying on another port",
                    self.user.name,
                    port,
                    attempt,
                    self.bind_attempts,
                )
            finally:
                # Bound (the kernel now holds it) or abandoned: either way not ours to hold.
                hub_ports.release(port)

    async def _start_on_reserved_port(self):
        # The server starts in its home, which SimpleLocalProcessSpawner's preexec_fn
        # made; a failure is now the spawn's error instead of a log line in the child.
        Path(self.home_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.popen_kwargs = {**self.popen_kwargs, "cwd": self.home_dir}
        with self._server_log() as log_file:
            if log_file is not None:
                self.popen_kwargs = {
                    **self.popen_kwargs,
                    "stdout": log_file,
                    "stderr": subprocess.STDOUT,
                }
            ip, port = await super().start()
        if self.nice:
            # Its session too (see gpulab.priority); gone already: the wait below says so.
            lower_priority(self.pid, self.nice)
        self._write_pid_file()
        await wait_for_listener(
            self.pid,
            port,
            ip=ip,
            timeout=self.start_timeout,
            is_running=lambda: self.proc is not None and self.proc.poll() is None,
        )
        return ip, port

    async def poll(self):
        if not self.pid:
            self._end_orphan()  # state lost with a killed hub: a server may still run
        return await super().poll()

    async def stop(self, now=False):
        await super().stop(now=now)
        self._remove_pid_file()

    def _pid_path(self) -> Path | None:
        if not self.pid_dir:
            return None
        suffix = f"-{self.name}" if self.name else ""
        return Path(self.pid_dir) / f"{self.user.name}{suffix}.pid"

    def _write_pid_file(self) -> None:
        path = self._pid_path()
        if path is not None and self.pid:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{self.pid}\n")

    def _remove_pid_file(self) -> None:
        path = self._pid_path()
        if path is not None:
            path.unlink(missing_ok=True)

    def _end_orphan(self) -> None:
        """End the server process a pid file names, if it is still this server's (its
        environment says this user and server: a pid can be reused), and drop the file."""
        path = self._pid_path()
        if path is None or not path.exists():
            return
        with contextlib.suppress(ValueError, OSError, psutil.Error):
            process = psutil.Process(int(path.read_text().strip()))
            env = process.environ()
            if (env.get("JUPYTERHUB_USER") == self.user.name
                    and env.get("JUPYTERHUB_SERVER_NAME", "") == self.name):
                self.log.warning("Ending the orphaned server of %s (pid %s) left by a hub "
                                 "stopped during its spawn", self.user.name, process.pid)
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except psutil.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        path.unlink(missing_ok=True)

    async def _kill_failed_process(self):
        # Not clear_state(): that would also drop the API token the hub gave this spawn.
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.pid = 0

    def _log_path(self) -> Path | None:
        return Path(self.log_dir) / f"{self.user.name}.log" if self.log_dir else None

    def _server_log(self):
        path = self._log_path()
        if path is None:
            return _NoLog()
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab")  # noqa: SIM115 - closed by the with-block in start()


class LocalGpulabSpawner(QuotaSpawnerMixin, PortSafeLocalProcessSpawner):
    """The embedded default's spawner: quota-governed local processes on safe ports."""


class _NoLog:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
