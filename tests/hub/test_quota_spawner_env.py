"""The environment the quota spawner hands a server: its devices, its Dask-worker limit and
the quota service's URL, built from JupyterHub's own User, Hub and Service objects (an
in-memory hub database) and a real SQLite ledger. The hub as a whole runs in
tests/e2e/test_quota_service.py.

Fixtures
- ``config``: a traitlets Config with a SQLite ledger in ``tmp_path``, 2 static GPUs, a
  default ``max_dask_workers`` of 6 and a group "physics" with 12; the ``GpulabQuota``
  singleton is cleared after each test.
- ``make_spawner(name, groups=(), services=True)``: a ``RecordingSpawner`` of a new user
  ``name`` in ``groups``, on a hub whose service map holds the quota service (at
  ``http://127.0.0.1:9123``) unless ``services`` is False.

``RecordingSpawner`` is the quota mixin over JupyterHub's base ``Spawner`` with a base
``start()`` that launches nothing and keeps the environment it would have started with.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.services.service import Service
from jupyterhub.spawner import Spawner
from jupyterhub.user import User
from traitlets.config import Config

from gpulab_hub.quota import GpulabQuota
from gpulab_hub.quota_spawner import QuotaSpawnerMixin

SERVICE_URL = "http://127.0.0.1:9123"


class StartsNothing(Spawner):
    """A base spawner that starts no process: it records the environment instead."""

    started_env: dict | None = None

    async def start(self):
        self.started_env = self.get_env()
        return ("127.0.0.1", 1)

    async def poll(self):
        return None

    async def stop(self, now=False):
        pass


class RecordingSpawner(QuotaSpawnerMixin, StartsNothing):
    pass


@pytest.fixture
def config(tmp_path):
    c = Config()
    c.GpulabQuota.ledger_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    c.GpulabQuota.static_gpus = 2
    c.GpulabQuota.default_policy = {"max_dask_workers": 6}
    c.GpulabQuota.group_policies = {"physics": {"max_dask_workers": 12}}
    yield c
    GpulabQuota.clear_instance()


@pytest.fixture
def make_spawner(config):
    db = orm.new_session_factory("sqlite://")()
    hub = Hub(ip="127.0.0.1", port=8081, base_url="/hub/")
    quota_service = Service(name="gpulab-quota", url=SERVICE_URL, base_url="/")

    def make(name, groups=(), services=True):
        orm_user = orm.User(name=name)
        for group in groups:
            orm_user.groups.append(orm.Group.find(db, group) or orm.Group(name=group))
        db.add(orm_user)
        db.commit()
        settings = {
            "services": {"gpulab-quota": quota_service} if services else {},
            "spawner_class": RecordingSpawner,
            "config": config,
            "hub": hub,
            "db": db,
        }
        return User(orm_user, settings).spawners[""]

    yield make
    db.close()


def gpulab_env(env):
    return {k: v for k, v in env.items() if k.startswith(("GPULAB_", "CUDA_"))}


def test_a_gpu_server_gets_its_devices_limit_and_the_service_url(make_spawner):
    spawner = make_spawner("ada")
    spawner.user_options = {"gpus": 2}
    asyncio.run(spawner.start())
    allocation = spawner.quota.ledger.find_open("ada", "")
    devices = ",".join(allocation.device_uuids)
    assert len(allocation.device_uuids) == 2
    env = gpulab_env(spawner.started_env)
    described = json.loads(env.pop("GPULAB_GPU_INFO"))
    assert [d["uuid"] for d in described] == list(allocation.device_uuids)
    assert {d["name"] for d in described} == {"Static GPU"}
    assert env == {
        "CUDA_VISIBLE_DEVICES": devices,
        "GPULAB_ALLOCATED_DEVICES": devices,
        "GPULAB_GPUS": "2",
        "GPULAB_ALLOCATION_ID": str(allocation.id),
        "GPULAB_MAX_DASK_WORKERS": "6",
        "GPULAB_QUOTA_URL": f"{SERVICE_URL}/services/gpulab-quota/",
    }


def test_a_cpu_server_in_a_group_gets_no_devices_and_the_groups_limit(make_spawner):
    spawner = make_spawner("bo", groups=["physics"])
    asyncio.run(spawner.start())
    env = gpulab_env(spawner.started_env)
    assert env["CUDA_VISIBLE_DEVICES"] == env["GPULAB_ALLOCATED_DEVICES"] == ""
    assert env["GPULAB_MAX_DASK_WORKERS"] == "12"


def test_no_dask_limit_is_an_empty_value(make_spawner, config):
    config.GpulabQuota.user_policies = {"cy": {"max_dask_workers": None}}
    spawner = make_spawner("cy")
    asyncio.run(spawner.start())
    assert spawner.started_env["GPULAB_MAX_DASK_WORKERS"] == ""


def test_without_a_quota_service_there_is_no_url(make_spawner):
    spawner = make_spawner("dee", services=False)
    asyncio.run(spawner.start())
    assert "GPULAB_QUOTA_URL" not in spawner.started_env
    assert spawner.quota_service_url() == ""


def test_stopping_the_server_closes_its_clusters(make_spawner):
    spawner = make_spawner("eve")
    spawner.user_options = {"gpus": 1}
    asyncio.run(spawner.start())
    ledger = spawner.quota.ledger
    device = spawner.started_env["GPULAB_ALLOCATED_DEVICES"]
    ledger.admit_cluster(
        user="eve",
        server="",
        key="k1",
        name="prep",
        workers=2,
        gpus=1,
        devices=[device],
        max_workers=int(spawner.started_env["GPULAB_MAX_DASK_WORKERS"]),
    )
    asyncio.run(spawner.stop())
    assert ledger.open_clusters("eve") == []
    event = ledger.audit("eve", action="cluster_released", limit=1)[0]
    assert (event.reason, event.detail["key"]) == ("server stopped", "k1")
