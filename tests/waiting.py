"""Waiting in tests for something that happens in another process or thread."""

import time


def poll(check, timeout=30.0, what="condition", every=0.1):
    """``check()``'s first truthy value, asked every ``every`` s; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
