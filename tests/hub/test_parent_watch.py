"""parent_watch ends its command when its parent dies, and passes signals on."""

import os
import signal
import subprocess
import sys
import time

import psutil

WATCH = [sys.executable, "-m", "gpulab_hub.parent_watch", "--"]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_the_command_ends_when_the_parent_is_killed():
    # A parent (standing in for the hub) that starts the watcher, then is SIGKILLed.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, time; subprocess.Popen({WATCH + SLEEPER!r}); time.sleep(120)",
        ]
    )
    deadline = time.monotonic() + 20
    while True:
        children = psutil.Process(parent.pid).children(recursive=True)
        if len(children) >= 2:
            break
        assert time.monotonic() < deadline, "the watcher and its command did not start"
        time.sleep(0.1)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [p.cmdline() for p in alive]


def test_sigterm_reaches_the_command_and_its_status_comes_back():
    watcher = subprocess.Popen(
        WATCH
        + [
            sys.executable,
            "-c",
            "import signal, sys, time; "
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); time.sleep(60)",
        ]
    )
    time.sleep(1.5)
    os.kill(watcher.pid, signal.SIGTERM)
    assert watcher.wait(15) == 7


def test_no_command_is_a_usage_error():
    result = subprocess.run(WATCH, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
