"""The "Workshops and roles" section of jupyterhub_config.py: the hub routes, the page
templates, and the CLI's token with exactly the operator scopes the workshop API asks for."""

from __future__ import annotations

import stat
from pathlib import Path

from gpulab_hub.workshops.api import OPERATOR_SCOPES
from tests.hub.test_jupyterhub_config import load_config


def test_workshop_routes_templates_and_cli_token(monkeypatch, tmp_path):
    state = tmp_path / "state"
    c = load_config(monkeypatch, state)
    routes = [handler[0] for handler in c.JupyterHub.extra_handlers]
    assert routes == [
        r"/api/gpulab/workshops",
        r"/api/gpulab/workshops/([^/]+)/close",
        r"/gpulab/instructor",
    ]
    (templates,) = c.JupyterHub.template_paths
    assert (Path(templates) / "gpulab-instructor.html").is_file()

    (service,) = [s for s in c.JupyterHub.services if s["name"] == "gpulab-workshops-cli"]
    token_file = state / "workshops-token"
    assert service["api_token"] == token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert "command" not in service and "url" not in service  # a token, not a process
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "gpulab-workshops-cli"]
    assert role["services"] == ["gpulab-workshops-cli"]
    assert sorted(role["scopes"]) == sorted(OPERATOR_SCOPES)
    # The token survives restarts: the CLI keeps working against the same state folder.
    again = load_config(monkeypatch, state)
    (service,) = [s for s in again.JupyterHub.services if s["name"] == "gpulab-workshops-cli"]
    assert service["api_token"] == token_file.read_text().strip()
