"""For the whole test session: nothing a test started outlives the session.

Hubs, proxies, single-user servers and services that tests start live in the session's
temporary folder (their state, homes, pid files). Each test stops its own; this is the
net under a test that failed half-way (a hub that never became ready leaves its proxy,
whose pid file is in its state folder). At the end of the session every process whose
command line or environment names this session's temporary folder, or whose pid a
``proxy.pid`` file there holds, is ended, and the ones found are printed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil
import pytest


def _session_processes(base: Path) -> list[psutil.Process]:
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    marker = str(base) + os.sep  # not pytest-36 for pytest-360
    found: dict[int, psutil.Process] = {}
    for pid_file in base.rglob("proxy.pid"):
        with contextlib.suppress(ValueError, OSError, psutil.Error):
            proc = psutil.Process(int(pid_file.read_text().strip()))
            if "configurable-http-proxy" in " ".join(proc.cmdline()):
                found[proc.pid] = proc
    for proc in psutil.process_iter():
        if proc.pid in mine or proc.pid in found:
            continue
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(proc.cmdline()) or any(
                    marker in value for value in proc.environ().values()):
                found[proc.pid] = proc
    return list(found.values())


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    yield
    left = _session_processes(base)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            print(f"\nending a process a test left running: {proc.pid} "
                  f"{' '.join(proc.cmdline())[:160]}")
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
