"""CPU priority of a started process and of its whole session, for Linux's autogroup
scheduling.

With autogroups (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in many
distributions) the scheduler first shares the CPU equally between sessions, and a
process's nice value only counts against the other processes of its own session.
JupyterHub starts each single-user server in a session of its own, and jupyter_client
each kernel, so a niced server or kernel still took as large a share as the hub: forty
starting servers left the hub's event loop one forty-first of the CPU (bench.hub_load).
A session's own nice value is set through ``/proc/PID/autogroup``; raising it needs no
privilege. Where the kernel has no autogroups the file is missing, and where the process
is not in an autogroup of its own (the first session, or a cgroup's cpu controller
decides) the file reads empty: there the processes' nice values alone count.

Both are set from the parent after the start, never in a ``preexec_fn``: the hub and
Jupyter servers are threaded, and Python code run between fork and exec in a threaded
process can deadlock the child.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def nice_session(niceness: int, pid: int | str = "self") -> bool:
    """Give the session (autogroup) of process ``pid`` the nice value ``niceness`` (0 to
    19); False where the kernel has no autogroups or the process is gone or not ours."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as autogroup:
            autogroup.write(str(niceness))
    except OSError:
        return False
    return True


def lower_priority(pid: int, niceness: int) -> bool:
    """Add ``niceness`` to the nice value of each thread of the started process ``pid``
    and give its session that nice value (``nice_session``); False if it is gone.

    The main thread goes first: a thread it starts afterwards inherits its value, and
    one it started before is listed in ``/proc/PID/task`` by then."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, _added(pid, niceness))
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (ProcessLookupError, FileNotFoundError):
        return False
    for tid in threads:
        if tid != pid:
            with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
                os.setpriority(os.PRIO_PROCESS, tid, _added(tid, niceness))
    nice_session(niceness, pid)
    return True


def session_group(pid: int | str = "self") -> str | None:
    """The autogroup line of process ``pid`` (``/autogroup-N nice K``), or None where its
    CPU share is not an autogroup's (no autogroups, or see the module)."""
    try:
        text = Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return None
    return text or None


def _added(tid: int, niceness: int) -> int:
    return min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
