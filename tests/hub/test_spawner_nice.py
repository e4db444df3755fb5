"""LocalGpulabSpawner.nice: users' servers (and so their kernels) start at a lower
priority than the hub and its proxy; a bad value is refused with the setting named."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from traitlets import TraitError

from gpulab_hub.spawner import LocalGpulabSpawner


def niceness_of_a_child(spawner) -> tuple[int, str]:
    child = subprocess.run(
        [sys.executable, "-c", SHOW_NICENESS],
        preexec_fn=spawner.make_preexec_fn("ada"),
        start_new_session=True,  # as JupyterHub's LocalProcessSpawner starts servers
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    niceness, autogroup = child.stdout.split(maxsplit=1)
    return int(niceness), autogroup.strip()


# The process's niceness and its session's (Linux autogroup scheduling), if the kernel has it.
SHOW_NICENESS = """
import os
from pathlib import Path
group = Path("/proc/self/autogroup")
print(os.nice(0), group.read_text() if group.exists() else "none")
"""


def spawner_for_ada(tmp_path, **config) -> LocalGpulabSpawner:
    (tmp_path / "ada").mkdir(exist_ok=True)  # the server starts in its home
    return LocalGpulabSpawner(
        user=SimpleNamespace(name="ada"), home_dir_template=str(tmp_path / "{username}"), **config
    )


def test_a_server_starts_niced_by_the_setting(tmp_path):
    ours = os.nice(0)
    niceness, autogroup = niceness_of_a_child(spawner_for_ada(tmp_path, nice=7))
    assert niceness == min(19, ours + 7)
    assert niceness_of_a_child(spawner_for_ada(tmp_path))[0] == ours  # default: unchanged
    if autogroup == "none":
        print("this kernel has no autogroup scheduling: only the process's niceness applies")
    else:
        # Its own session (as JupyterHub starts servers), niced as a whole.
        assert autogroup.endswith("nice 7"), autogroup


@pytest.mark.parametrize("value", [-1, 20])
def test_a_niceness_out_of_range_is_refused_by_name(value):
    with pytest.raises(TraitError, match=rf"LocalGpulabSpawner.nice must be 0 to 19, not {value}"):
        LocalGpulabSpawner(nice=value)
