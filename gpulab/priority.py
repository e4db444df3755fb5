"""CPU priority of a whole session, for Linux's autogroup scheduling.

With autogroups (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in many
distributions) the scheduler first shares the CPU equally between sessions, and a
process's nice value only counts against the other processes of its own session.
JupyterHub starts each single-user server in a session of its own, and jupyter_client
each kernel, so a niced server or kernel still took as large a share as the hub: forty
starting servers left the hub's event loop one forty-first of the CPU (bench.hub_load).
A session's own nice value is set through ``/proc/PID/autogroup``; raising it needs no
privilege. Where the kernel has no autogroups the file is missing and the processes'
nice values alone count.
"""

from __future__ import annotations


def nice_session(niceness: int, pid: int | str = "self") -> bool:
    """Give the session (autogroup) of process ``pid`` the nice value ``niceness`` (0 to
    19); False where the kernel has no autogroups or the process is gone or not ours."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as autogroup:
            autogroup.write(str(niceness))
    except OSError:
        return False
    return True

