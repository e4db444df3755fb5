"""jupyterhub_config.py as JupyterHub loads it: everything in the state folder, the
admin's first password printed once, the aliases resolving to gpulab's classes."""

from importlib.metadata import entry_points
from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

REPO = Path(__file__).resolve().parents[2]


def load_config(monkeypatch, state, port="8123"):
    monkeypatch.setenv("GPULAB_STATE_DIR", str(state))
    monkeypatch.setenv("GPULAB_PORT", port)
    monkeypatch.delenv("GPULAB_IP", raising=False)
    monkeypatch.delenv("GPULAB_ADMIN", raising=False)
    monkeypatch.delenv("GPULAB_HUB_CONFIG", raising=False)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(REPO)).load_config()


def test_config_keeps_all_state_in_the_state_folder(monkeypatch, tmp_path, capsys):
    state = tmp_path / "state"
    c = load_config(monkeypatch, state)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8123"
    assert c.JupyterHub.db_url == f"sqlite:///{state / 'jupyterhub.sqlite'}"
    assert c.JupyterHub.cookie_secret_file == str(state / "jupyterhub_cookie_secret")
    assert c.ConfigurableHTTPProxy.pid_file == str(state / "proxy.pid")
    assert (state / "proxy-token").read_text().strip() == c.ConfigurableHTTPProxy.auth_token
    assert c.LocalGpulabSpawner.home_dir_template == str(state / "home" / "{username}")
    assert c.Spawner.default_url == "/lab"
    proxy = Path(c.ConfigurableHTTPProxy.command[0])
    assert proxy.is_relative_to(REPO / "node_modules") and proxy.exists()


def test_internal_ports_differ_from_the_public_one_and_between_loads(monkeypatch, tmp_path):
    first = load_config(monkeypatch, tmp_path / "a")
    second = load_config(monkeypatch, tmp_path / "b")
    urls = {
        first.JupyterHub.hub_bind_url,
        first.ConfigurableHTTPProxy.api_url,
        second.JupyterHub.hub_bind_url,
        second.ConfigurableHTTPProxy.api_url,
    }
    assert len(urls) == 4
    assert all(url.startswith("http://127.0.0.1:") and not url.endswith(":8123") for url in urls)


def test_admin_password_is_printed_on_first_load_only(monkeypatch, tmp_path, capsys):
    state = tmp_path / "state"
    load_config(monkeypatch, state)
    first = capsys.readouterr().out
    password = (state / "admin-password").read_text().strip()
    assert "admin user: admin\n" in first
    assert f"admin password: {password}\n" in first
    load_config(monkeypatch, state)
    assert "password" not in capsys.readouterr().out


def test_bad_environment_stops_the_hub_with_the_variable_named(monkeypatch, tmp_path):
    from gpulab_hub.settings import SettingsError

    with pytest.raises(SettingsError, match="GPULAB_PORT"):
        load_config(monkeypatch, tmp_path / "state", port="http")
    assert not (tmp_path / "state").exists()


def test_services_run_with_only_the_scopes_they_need(monkeypatch, tmp_path):
    c = load_config(monkeypatch, tmp_path / "state")
    services = {service["name"]: service for service in c.JupyterHub.services}
    assert set(services) == {"idle-culler", "gpulab-quota", "dashboards", "gpulab-workshops-cli"}
    assert "jupyterhub_idle_culler" in services["idle-culler"]["command"]
    quota_command = services["gpulab-quota"]["command"]
    assert quota_command[-2:] == ["--config", str(REPO / "jupyterhub_config.py")]
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["idle-culler"]["services"] == ["idle-culler"]
    assert set(roles["idle-culler"]["scopes"]) == {
        "list:users",
        "read:users:activity",
        "read:servers",
        "delete:servers",
    }
    assert roles["gpulab-quota"]["services"] == ["gpulab-quota"]
    assert "admin:users" not in roles["gpulab-quota"]["scopes"]
    # Every user may ask the quota service about themselves; only operators more.
    assert "access:services!service=gpulab-quota" in roles["user"]["scopes"]
    assert roles["gpulab-operator"]["users"] == ["admin"]
    # The dashboards service reads who is in which group and who holds which role (an
    # instructor-NAME role shows that workshop's runs), nothing more; every user may
    # open it (what they see is decided per run).
    assert set(roles["dashboards"]["scopes"]) == {
        "list:users", "read:users:groups", "read:roles:users"}
    assert "access:services!service=dashboards" in roles["user"]["scopes"]
    # The workshop tool's token administers users, groups and servers; it runs no process.
    assert "command" not in services["gpulab-workshops-cli"]
    assert roles["gpulab-workshops-cli"]["services"] == ["gpulab-workshops-cli"]
    assert not any(s.startswith("admin:") for r in roles.values()
                   if r["name"] not in ("gpulab-workshops-cli", "admin") for s in r["scopes"])


def test_a_servers_own_token_may_call_the_quota_service(monkeypatch, tmp_path):
    from jupyterhub.roles import get_default_roles

    c = load_config(monkeypatch, tmp_path / "state")
    scopes = c.Spawner.server_token_scopes
    # JupyterHub's defaults for a server token (the "server" role) are kept ...
    (server_role,) = [role for role in get_default_roles() if role["name"] == "server"]
    assert set(server_role["scopes"]) <= set(scopes)
    # ... plus the quota service, which every user holds (so the token gets it).
    assert "access:services!service=gpulab-quota" in scopes
    user_role = {role["name"]: role for role in c.JupyterHub.load_roles}["user"]
    assert "access:services!service=gpulab-quota" in user_role["scopes"]


def test_quota_ledger_lives_in_the_state_folder(monkeypatch, tmp_path):
    state = tmp_path / "state"
    c = load_config(monkeypatch, state)
    assert c.GpulabQuota.ledger_url == f"sqlite:///{state / 'ledger.sqlite'}"


def test_aliases_name_gpulab_classes():
    from gpulab_hub.authenticator import GpulabNativeAuthenticator
    from gpulab_hub.spawner import LocalGpulabSpawner

    spawners = entry_points(group="jupyterhub.spawners")
    authenticators = entry_points(group="jupyterhub.authenticators")
    assert spawners["gpulab-local"].load() is LocalGpulabSpawner
    assert authenticators["gpulab-native"].load() is GpulabNativeAuthenticator


def test_internal_ports_are_kept_for_the_next_start_of_the_same_state(monkeypatch, tmp_path):
    first = load_config(monkeypatch, tmp_path / "state")
    second = load_config(monkeypatch, tmp_path / "state")
    assert first.JupyterHub.hub_bind_url == second.JupyterHub.hub_bind_url
    assert first.ConfigurableHTTPProxy.api_url == second.ConfigurableHTTPProxy.api_url


def test_oauth_login_is_switched_on_by_its_environment_only(monkeypatch, tmp_path):
    for name in ("GPULAB_OAUTH_CLIENT_ID",):
        monkeypatch.delenv(name, raising=False)
    native = load_config(monkeypatch, tmp_path / "native")
    assert native.JupyterHub.authenticator_class == "gpulab-native"
    monkeypatch.setenv("GPULAB_OAUTH_CLIENT_ID", "gpulab")
    monkeypatch.setenv("GPULAB_OAUTH_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("GPULAB_OAUTH_AUTHORIZE_URL", "https://idp.example/auth")
    monkeypatch.setenv("GPULAB_OAUTH_TOKEN_URL", "https://idp.example/token")
    monkeypatch.setenv("GPULAB_OAUTH_USERDATA_URL", "https://idp.example/userinfo")
    monkeypatch.setenv("GPULAB_OAUTH_CALLBACK_URL", "https://hub.example/hub/oauth_callback")
    oauth = load_config(monkeypatch, tmp_path / "oauth")
    assert oauth.JupyterHub.authenticator_class == "gpulab-oauth"
    assert oauth.GpulabGenericOAuthenticator.client_id == "gpulab"


def test_users_servers_run_niced_and_the_hub_database_in_wal_mode(monkeypatch, tmp_path):
    state = tmp_path / "state"
    c = load_config(monkeypatch, state)
    assert c.LocalGpulabSpawner.nice == 10
    # Their kernels' sessions too, by gpulab's provisioner (tests/kernels/test_niced_kernels).
    assert c.Spawner.environment["JUPYTER_DEFAULT_PROVISIONER_NAME"] == "gpulab-local-provisioner"
    # No installs into the hub's environment from JupyterLab (checked live in
    # tests/e2e/test_concurrent_spawns.py).
    assert "--LabApp.extension_manager=readonly" in c.Spawner.args
    connection = c.JupyterHub.db_kwargs["creator"]()
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA database_list").fetchone()[2] == str(
            state / "jupyterhub.sqlite"
        )
    finally:
        connection.close()
