"""Which devices a profile draws from: whole GPUs, or MIG slices of one size, on a node
whose static inventory has both (one GPU whole, one in MIG mode as three slices)."""

import pytest
from traitlets.config import Config

from gpulab.quota.ledger import QuotaDenied
from gpulab.quota.policy import Policy
from gpulab.quota.profiles import build_profiles, offered_profiles
from gpulab_hub.quota import GpulabQuota

WHOLE = {"uuid": "GPU-whole-0", "memory_bytes": 80 << 30}
SLICES = [
    {
        "uuid": f"MIG-slice-{i}",
        "memory_bytes": 10 << 30,
        "mig_parent_uuid": "GPU-mig-parent",
        "profile": "1g.10gb",
    }
    for i in range(3)
]


@pytest.fixture
def quota(tmp_path):
    c = Config()
    c.GpulabQuota.ledger_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    c.GpulabQuota.static_gpus = [WHOLE, *SLICES]
    yield GpulabQuota(config=c)
    GpulabQuota.clear_instance()


def profile(quota, name):
    offered = offered_profiles(Policy(), len(quota.whole_gpus()), quota.mig_slices())
    return {p.name: p for p in offered}[name]


def test_pools_split_whole_gpus_from_slices(quota):
    assert quota.whole_gpus() == ["GPU-whole-0"]
    assert quota.mig_slices() == {"1g.10gb": ["MIG-slice-0", "MIG-slice-1", "MIG-slice-2"]}
    assert quota.device_pool(profile(quota, "1-gpu")) == ["GPU-whole-0"]
    assert len(quota.device_pool(profile(quota, "mig-1g.10gb"))) == 3


def test_slices_are_granted_from_their_pool_until_it_is_empty(quota):
    mig = profile(quota, "mig-1g.10gb")
    granted = [
        quota.ledger.admit(
            user=f"u{i}", server="", gpus=1, policy=Policy(), devices=quota.device_pool(mig)
        )
        for i in range(3)
    ]
    assert {g.device_uuids[0] for g in granted} == set(quota.device_pool(mig))
    with pytest.raises(QuotaDenied) as denied:
        quota.ledger.admit(
            user="u9", server="", gpus=1, policy=Policy(), devices=quota.device_pool(mig)
        )
    assert denied.value.reason == "capacity"
    # The whole GPU is still free, and the form says which is which.
    profiles = {p.name: p for p in build_profiles(Policy(), quota.capacity_for("u9", Policy()))}
    assert profiles["1-gpu"].available
    assert not profiles["mig-1g.10gb"].available
    assert profiles["mig-1g.10gb"].reason == "all 3 1g.10gb slices are in use"
