"""The ``gpulab`` command, run as users run it (the installed script)."""

import subprocess
import sys
from pathlib import Path

from gpulab import __version__

GPULAB = str(Path(sys.executable).with_name("gpulab"))


def run(*args, env=None):
    return subprocess.run([GPULAB, *args], capture_output=True, text=True, env=env, timeout=60)


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gpulab {__version__}"


def test_help_lists_the_hub_command_registered_by_the_adapter():
    result = run("--help")
    assert result.returncode == 0
    assert "hub" in result.stdout
    assert "run the hub on the embedded default" in result.stdout


def test_no_command_prints_help_and_fails():
    result = run()
    assert result.returncode == 2
    assert "usage: gpulab" in result.stdout


def test_hub_with_a_bad_port_says_which_variable_to_fix(tmp_path):
    import os

    env = {**os.environ, "GPULAB_PORT": "80800", "GPULAB_STATE_DIR": str(tmp_path / "s")}
    result = run("hub", env=env)
    assert result.returncode == 2
    assert "GPULAB_PORT must be a port number from 1 to 65535, not '80800'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_hub_with_a_missing_config_file_says_so(tmp_path):
    result = run("hub", "--config", str(tmp_path / "nope.py"))
    assert result.returncode == 2
    assert "is not a file" in result.stderr


def test_hub_refuses_a_bad_quota_setting_before_starting(tmp_path):
    import os

    config = tmp_path / "bad_config.py"
    config.write_text(
        "from pathlib import Path\n"
        f"load_subconfig({str(Path(__file__).resolve().parents[2] / 'jupyterhub_config.py')!r})\n"
        "c = get_config()\n"
        "c.GpulabQuota.group_policies = {'physics': {'max_gpus': -1}}\n"
    )
    env = {**os.environ, "GPULAB_STATE_DIR": str(tmp_path / "s"), "GPULAB_PORT": "8999"}
    result = run("hub", "--config", str(config), env=env)
    assert result.returncode == 2
    assert "max_gpus" in result.stderr and "physics" in result.stderr and "-1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s" / "jupyterhub.sqlite").exists()  # the hub never started
