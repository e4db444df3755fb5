"""Fixtures of the deployment tests: real spawner classes (KubeSpawner, batchspawner's
SlurmSpawner, SystemdSpawner under gpulab's quota), each admitted by a real ``GpulabQuota``
on a SQLite ledger in ``tmp_path``, with no cluster, batch system or systemd behind them.

Fixtures
- ``quota_config``: a traitlets Config with that ledger and a static pool of 4 whole GPUs
  and 2 MIG slices of 1g.10gb (``pool_inventory``), a default policy of 2 GPUs at once and
  an 8 h session, and a group "students" limited to the MIG profile and CPU; the
  ``GpulabQuota`` singleton is cleared after each test.
- ``kubeconfig`` (session, autouse): the Kubernetes client's default kubeconfig is one of
  a cluster at 127.0.0.1:9 (discard: nothing answers), as a hub outside the cluster has
  one; KubeSpawner loads it when built, and the tests never call the API.
- ``hub_db`` (session): JupyterHub's database in memory (its schema takes seconds to build).
- ``make_spawner(cls, name, groups=(), options=None)``: a spawner of class ``cls`` for a new
  hub user ``name`` in ``groups`` (JupyterHub's own ``User`` on ``hub_db``, the quota
  and dashboards services registered), its ``user_options`` set. KubeSpawner must be
  built inside a running event loop: call it from the test's coroutine.
"""

from __future__ import annotations

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.services.service import Service
from jupyterhub.user import User
from kubernetes_asyncio.config import kube_config
from traitlets.config import Config

from gpulab_hub.profile_resources import pool_inventory
from gpulab_hub.quota import GpulabQuota

QUOTA_URL = "http://hub:9123"


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: hub, user: {token: not-a-real-token}}]
contexts: [{name: none, context: {cluster: none, user: hub, namespace: gpulab}}]
current-context: none
"""


@pytest.fixture(scope="session", autouse=True)
def kubeconfig(tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(KUBECONFIG)
    with pytest.MonkeyPatch.context() as patch:
        # The client reads $KUBECONFIG when imported, so its default is moved instead.
        patch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
        yield path


@pytest.fixture
def quota_config(tmp_path):
    c = Config()
    c.GpulabQuota.ledger_url = f"sqlite:///{tmp_path}/ledger.sqlite"
    c.GpulabQuota.static_gpus = pool_inventory(
        "a100", 4, name="NVIDIA A100 80GB", memory_gib=80, mig_slices={"1g.10gb": 2}
    )
    c.GpulabQuota.default_policy = {"max_gpus": 2, "max_session": "8h", "max_dask_workers": 6}
    c.GpulabQuota.group_policies = {
        "students": {"profiles": ["cpu", "mig-1g.10gb"], "max_dask_workers": 2}
    }
    yield c
    GpulabQuota.clear_instance()


@pytest.fixture(scope="session")
def hub_db():
    # Building JupyterHub's schema takes seconds: one in-memory database for the session,
    # emptied of users after each test.
    db = orm.new_session_factory("sqlite://")()
    yield db
    db.close()


@pytest.fixture
def make_spawner(quota_config, hub_db):
    db = hub_db
    hub = Hub(ip="127.0.0.1", port=8081, base_url="/hub/")
    services = {
        "gpulab-quota": Service(name="gpulab-quota", url=QUOTA_URL, base_url="/"),
        "dashboards": Service(
            name="dashboards",
            url="http://hub:9124",
            base_url="/",
            environment={"GPULAB_RUNS_DIR": "/srv/gpulab/runs", "GPULAB_RUN_LINKS": "1"},
        ),
    }

    def make(cls, name, groups=(), options=None):
        orm_user = orm.User(name=name)
        for group in groups:
            orm_user.groups.append(orm.Group.find(db, group) or orm.Group(name=group))
        db.add(orm_user)
        db.commit()
        settings = {
            "services": services,
            "spawner_class": cls,
            "config": quota_config,
            "hub": hub,
            "db": db,
        }
        spawner = User(orm_user, settings).spawners[""]
        spawner.user_options = dict(options or {})
        return spawner

    yield make
    db.rollback()
    for orm_user in db.query(orm.User):
        db.delete(orm_user)
    for group in db.query(orm.Group):
        db.delete(group)
    db.commit()
