"""The Dask Gateway's options handler applies gpulab's policy: dask-gateway's own
``Options`` and the gateway backend's ``process_cluster_options`` (what the gateway calls
on ``POST /api/v1/clusters/``), with policies and operator overrides read from a real
SQLite ledger (``quota_policy_lookup``), as in the gateway pod."""

from __future__ import annotations

import asyncio

import pytest
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
from dask_gateway_server.backends.local import UnsafeLocalBackend
from dask_gateway_server.models import User
from traitlets.config import Config

from gpulab.quota.policy import Policy
from gpulab_hub.gateway_options import (
    ClusterOptionsRefused,
    cluster_configuration,
    gpulab_cluster_options,
    quota_policy_lookup,
)
from gpulab_hub.quota import GpulabQuota


@pytest.fixture
def settings(quota_config):
    settings = dict(quota_config.GpulabQuota)
    settings["group_policies"] = {
        **settings["group_policies"],
        "intro-course": {"profiles": ["cpu"], "max_dask_workers": 4},  # no GPUs at all
    }
    return settings


@pytest.fixture
def policy_for(settings):
    return quota_policy_lookup(settings)


@pytest.fixture
def backend(policy_for):
    # dask-gateway's local backend (no Kubernetes here): the same options and limits.
    options = gpulab_cluster_options(policy_for, max_cores=4, kubernetes=False)
    return UnsafeLocalBackend(cluster_options=options)


def create(backend, user, request):
    """What the gateway does with a cluster request: the options, then the config."""
    return asyncio.run(backend.process_cluster_options(user, request))


RESEARCHER = User("ada", groups=["physics"])
STUDENT = User("stu", groups=["students"])  # CPU or a MIG slice
INTRO = User("ida", groups=["intro-course"])  # CPU only


def test_a_gpu_cluster_is_bounded_by_the_users_gpus_and_workers(backend):
    options, config = create(backend, RESEARCHER, {"gpus_per_worker": 1, "worker_cores": 2,
                                                   "worker_memory": 8})
    assert options == {"gpus_per_worker": 1, "worker_cores": 2, "worker_memory": 8}
    # max_dask_workers 6, max_gpus 2: a GPU cluster may scale to 2 workers.
    assert config.cluster_max_workers == 2
    assert config.worker_cores == 2 and config.worker_memory == 8 * 2**30
    assert config.environment["GPULAB_GPUS_PER_WORKER"] == "1"


def test_a_cpu_cluster_is_bounded_by_max_dask_workers(backend):
    _, config = create(backend, RESEARCHER, {})
    assert config.cluster_max_workers == 6
    _, config = create(backend, STUDENT, {})
    assert config.cluster_max_workers == 2  # the students group's max_dask_workers


def test_a_cpu_only_user_is_not_offered_gpu_workers_and_is_refused_them(backend):
    def gpu_field(user):
        spec = asyncio.run(backend.get_cluster_options(user)).get_specification()
        return next(field for field in spec if field["field"] == "gpus_per_worker")

    assert gpu_field(INTRO)["spec"]["max"] == 0
    assert gpu_field(STUDENT)["spec"]["max"] == 1
    with pytest.raises(PublicException, match="gpus_per_worker"):
        create(backend, INTRO, {"gpus_per_worker": 1})


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"worker_cores": 64}, "worker_cores"),
        ({"gpus_per_worker": 2}, "gpus_per_worker"),
        ({"worker_memory": 0}, "worker_memory"),
        ({"workers": 3}, "Unknown fields"),
    ],
)
def test_bad_options_are_refused_naming_the_field(backend, request_, message):
    with pytest.raises(PublicException, match=message):
        create(backend, RESEARCHER, request_)


def test_an_operator_override_applies_at_the_next_cluster(backend, settings):
    # The hub's operator lowers everyone's Dask workers in the ledger (the quota API does
    # this); the gateway reads the same ledger.
    config = Config()
    for key, value in settings.items():
        setattr(config.GpulabQuota, key, value)
    hub_quota = GpulabQuota(config=config)
    hub_quota.set_policy("default", "", {"max_dask_workers": 3}, actor="admin")
    _, cluster = create(backend, RESEARCHER, {})
    assert cluster.cluster_max_workers == 3
    hub_quota.set_policy("default", "", {"max_dask_workers": 0}, actor="admin")
    with pytest.raises(PublicException, match="allows no Dask workers"):
        create(backend, RESEARCHER, {})


def test_the_gpu_configuration_is_a_valid_kubernetes_cluster_config():
    config = cluster_configuration(
        {"worker_cores": 2, "worker_memory": 4, "gpus_per_worker": 1}, Policy(max_gpus=3)
    )
    kube = KubeClusterConfig(**config)
    assert kube.worker_extra_container_config == {
        "resources": {"limits": {"nvidia.com/gpu": "1"}}
    }
    assert kube.cluster_max_workers == 3 and kube.worker_cmd == ["dask-cuda-worker"]
    assert kube.worker_cores_limit == 2


def test_a_refusal_names_its_field():
    with pytest.raises(ClusterOptionsRefused) as refused:
        cluster_configuration({"worker_cores": 1, "worker_memory": 1, "gpus_per_worker": 1},
                              Policy(max_gpus=0))
    assert refused.value.field == "gpus_per_worker"
