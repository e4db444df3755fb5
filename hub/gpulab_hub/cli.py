"""``gpulab hub``: run the JupyterHub of the embedded default and say where to log in.

JupyterHub runs as a child process in its own session, so a Ctrl-C in the terminal
reaches it once (forwarded from here) and it can stop the proxy and servers cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gpulab_hub.settings import EmbeddedSettings, SettingsError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="run the hub on the embedded default (what `make run` does)",
        description="Run JupyterHub with gpulab's embedded default and print where to log in. "
        "Reads GPULAB_STATE_DIR, GPULAB_IP, GPULAB_PORT and GPULAB_ADMIN.",
    )
    parser.add_argument(
        "--config",
        default="jupyterhub_config.py",
        help="the JupyterHub config file (default: ./jupyterhub_config.py)",
    )
    parser.set_defaults(handler=run_hub)


def run_hub(args) -> int:
    try:
        settings = EmbeddedSettings.from_env()
    except SettingsError as e:
        print(f"gpulab hub: {e}", file=sys.stderr)
        return 2
    config = Path(args.config)
    if not config.is_file():
        print(f"gpulab hub: --config {str(config)!r} is not a file", file=sys.stderr)
        return 2

    problem = config_problem(config.resolve())
    if problem:
        print(f"gpulab hub: {config}: {problem}", file=sys.stderr)
        return 2

    jupyterhub = Path(sys.executable).with_name("jupyterhub")
    # The hub's services (the quota service) read the same config file.
    env = {**os.environ, "GPULAB_HUB_CONFIG": str(config.resolve())}
    hub = subprocess.Popen(
        [str(jupyterhub), "-f", str(config.resolve())], start_new_session=True, env=env
    )

    def forward(signum, _frame):
        hub.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)

    if wait_until_healthy(settings.public_url, hub):
        print(
            f"gpulab hub is ready: log in at {settings.public_url}/hub/login "
            f"(admin user: {settings.admin}; its first password is in "
            f"{settings.admin_password_file})",
            flush=True,
        )
    return hub.wait()


def config_problem(path: Path) -> str | None:
    """What stops gpulab's part of the config from working, checked before the hub starts
    (fail closed: a bad quota setting must not surface at someone's spawn), or None."""
    from sqlalchemy.exc import SQLAlchemyError
    from traitlets import TraitError
    from traitlets.config.loader import PyFileConfigLoader

    from gpulab.gpus import InventoryError
    from gpulab_hub.quota import GpulabQuota
    from gpulab_hub.quota_service import QuotaService

    try:
        config = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
        GpulabQuota(config=config).ledger.close()
        QuotaService(config=config)
    except (ValueError, TraitError, InventoryError, SQLAlchemyError) as e:
        return str(e)
    return None


def wait_until_healthy(public_url: str, hub: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll the hub's health endpoint through the proxy until it answers 200."""
    deadline = time.monotonic() + timeout
    while hub.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{public_url}/hub/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    return False
