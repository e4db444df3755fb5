"""Helpers for the workshop tests against a real hub (tests/e2e/test_workshop_*.py).

- ``run_workshop_cli(hub, *args)``: ``gpulab workshop ...`` as an operator runs it on the
  hub's machine (state folder and port of that hub; the CLI's token from the state folder);
- ``sign_up_and_approve(hub, admin, name, password)``: a NativeAuthenticator account made
  the documented way: sign-up at /hub/signup, then an admin's approval at /hub/authorize;
- ``logged_in(hub, name, password)``: a ``HubSession`` with a login cookie (and no token).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO, HubSession, RunningHub


def run_workshop_cli(hub: RunningHub, *args: str) -> subprocess.CompletedProcess:
    gpulab = str(Path(sys.executable).with_name("gpulab"))
    env = {**os.environ, "GPULAB_STATE_DIR": str(hub.state_dir), "GPULAB_PORT": str(hub.port)}
    env.pop("GPULAB_HUB_TOKEN", None)
    return subprocess.run(
        [gpulab, "workshop", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def sign_up_and_approve(hub: RunningHub, admin: HubSession, name: str, password: str) -> None:
    visitor = HubSession(hub.url)
    visitor.http.get(f"{hub.url}/hub/signup", timeout=30).raise_for_status()
    signed_up = visitor.http.post(
        f"{hub.url}/hub/signup",
        data={
            "username": name,
            "signup_password": password,
            "signup_password_confirmation": password,
            "_xsrf": visitor.http.cookies.get("_xsrf"),
        },
        timeout=30,
    )
    assert signed_up.status_code == 200, signed_up.text[:2000]
    approved = admin.http.get(f"{hub.url}/hub/authorize/{name}", allow_redirects=False, timeout=30)
    assert approved.status_code == 302, approved.text[:2000]


def logged_in(hub: RunningHub, name: str, password: str) -> HubSession:
    session = HubSession(hub.url)
    response = session.login(name, password)
    assert response.status_code == 302, f"{name} could not log in: {response.text[:500]}"
    return session
