"""The embedded default's environment variables: defaults, and bad values named."""

from pathlib import Path

import pytest

from gpulab_hub.settings import EmbeddedSettings, SettingsError


def test_defaults_put_state_under_var_and_listen_on_loopback(tmp_path):
    settings = EmbeddedSettings.from_env({}, cwd=tmp_path)
    assert settings.state_dir == (tmp_path / "var").resolve()
    assert (settings.ip, settings.port, settings.admin) == ("127.0.0.1", 8000, "admin")
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.admin_password_file == settings.state_dir / "admin-password"


def test_values_from_the_environment(tmp_path):
    env = {
        "GPULAB_STATE_DIR": str(tmp_path / "s"),
        "GPULAB_IP": "::1",
        "GPULAB_PORT": "8123",
        "GPULAB_ADMIN": "ops-lead",
    }
    settings = EmbeddedSettings.from_env(env, cwd=Path("/"))
    assert settings.state_dir == tmp_path / "s"
    assert settings.public_url == "http://[::1]:8123"
    assert settings.admin == "ops-lead"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GPULAB_PORT", "eighty", "GPULAB_PORT must be a port number"),
        ("GPULAB_PORT", "0", "GPULAB_PORT must be a port number"),
        ("GPULAB_PORT", "70000", "GPULAB_PORT must be a port number"),
        ("GPULAB_IP", "localhost", "GPULAB_IP must be an IP address"),
        ("GPULAB_IP", "1.2.3", "GPULAB_IP must be an IP address"),
        ("GPULAB_ADMIN", "Admin", "GPULAB_ADMIN must be a lower-case name"),
        ("GPULAB_ADMIN", "a/b", "GPULAB_ADMIN must be a lower-case name"),
        ("GPULAB_ADMIN", "<script>", "GPULAB_ADMIN must be a lower-case name"),
    ],
)
def test_bad_values_name_the_variable_and_the_value(tmp_path, variable, value, message):
    with pytest.raises(SettingsError, match=message) as error:
        EmbeddedSettings.from_env({variable: value}, cwd=tmp_path)
    assert repr(value) in str(error.value)
    assert not (tmp_path / "var").exists()


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingsError, match="GPULAB_STATE_DIR must be a folder"):
        EmbeddedSettings.from_env({"GPULAB_STATE_DIR": "file"}, cwd=tmp_path)


def test_make_dirs_creates_private_folders(tmp_path):
    settings = EmbeddedSettings.from_env({}, cwd=tmp_path)
    settings.make_dirs()
    for folder in (settings.state_dir, settings.home_root, settings.log_dir):
        assert folder.is_dir()
        assert folder.stat().st_mode & 0o077 == 0
