"""gpulab.priority.nice_session: a session's niceness under Linux's autogroup scheduling."""

import subprocess
import sys
from pathlib import Path

from gpulab.priority import nice_session

AUTOGROUPS = Path("/proc/self/autogroup").exists()


def test_a_sessions_niceness_is_set_and_a_gone_process_is_reported():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        if AUTOGROUPS:
            assert nice_session(4, child.pid) is True
            group = Path(f"/proc/{child.pid}/autogroup").read_text().strip()
            assert group.endswith("nice 4"), group
            # Only that session: ours is untouched.
            assert Path("/proc/self/autogroup").read_text().strip() != group
        else:
            print("no autogroup scheduling on this kernel: nothing to set")
            assert nice_session(4, child.pid) is False
    finally:
        child.kill()
        child.wait()
    assert nice_session(4, child.pid) is False  # reaped: no such process
