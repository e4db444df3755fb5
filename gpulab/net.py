"""Small network helpers the core shares (no Jupyter, no hub)."""

from __future__ import annotations

import socket
import time


def wait_for_port(host: str, port: int, timeout: float, every: float = 0.02) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(every)
