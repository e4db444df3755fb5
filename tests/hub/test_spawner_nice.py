"""LocalGpulabSpawner.nice: users' servers (and so their kernels) start at a lower
priority than the hub and its proxy, set from the hub once they have started (the e2e
concurrent-spawns test checks a real server's niceness, session and home); a bad value
is refused with the setting named."""

import pytest
from traitlets import TraitError

from gpulab_hub.spawner import LocalGpulabSpawner


def test_no_python_runs_in_the_forked_child():
    # A preexec_fn in the threaded hub can deadlock the child between fork and exec.
    assert LocalGpulabSpawner(nice=7).make_preexec_fn("ada") is None


@pytest.mark.parametrize("value", [-1, 20])
def test_a_niceness_out_of_range_is_refused_by_name(value):
    with pytest.raises(TraitError, match=rf"LocalGpulabSpawner.nice must be 0 to 19, not {value}"):
        LocalGpulabSpawner(nice=value)
