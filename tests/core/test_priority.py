"""gpulab.priority: a started process's threads and its session (Linux's autogroup
scheduling) lowered from outside it."""

import os
import subprocess
import sys

import psutil
import pytest

from gpulab.priority import lower_priority, nice_session, session_group

# Starts three threads before it is niced; prints once they run.
THREADED = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def session_leader():
    child = subprocess.Popen(
        [sys.executable, "-c", THREADED], start_new_session=True, stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "ready\n"
    yield child
    child.kill()
    child.wait()


def thread_niceness(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, t.id) for t in psutil.Process(pid).threads()}


def test_a_sessions_niceness_is_set_and_a_gone_process_is_reported(session_leader):
    if session_group(session_leader.pid) is not None:
        assert nice_session(4, session_leader.pid) is True
        group = session_group(session_leader.pid)
        assert group.endswith("nice 4"), group
        # Only that session: ours is untouched (None: ours is no autogroup, see the module).
        assert session_group() != group
    else:
        print("this process's CPU share is no autogroup's: there is no session to nice")
    session_leader.kill()
    session_leader.wait()
    assert nice_session(4, session_leader.pid) is False  # reaped: no such process


def test_every_thread_of_a_started_process_is_lowered(session_leader):
    ours = os.nice(0)
    assert len(psutil.Process(session_leader.pid).threads()) == 4
    assert thread_niceness(session_leader.pid) == {ours}
    assert lower_priority(session_leader.pid, 5) is True
    assert thread_niceness(session_leader.pid) == {min(19, ours + 5)}
    group = session_group(session_leader.pid)
    assert group is None or group.endswith("nice 5"), group
    assert os.nice(0) == ours  # not the caller's


def test_lowering_is_capped_at_19_and_a_gone_process_is_reported(session_leader):
    assert lower_priority(session_leader.pid, 19) is True
    assert lower_priority(session_leader.pid, 19) is True
    assert thread_niceness(session_leader.pid) == {19}
    session_leader.kill()
    session_leader.wait()
    assert lower_priority(session_leader.pid, 5) is False
