"""The deployment files themselves: the Zero to JupyterHub values (YAML, the chart keys
they use, the extraConfig run as the chart runs it), the Slurm and systemd hub configs and
the quota service's config loaded by traitlets as JupyterHub loads them, the Dask Gateway
config, the shared quota files, and the Dockerfiles' sources.

The chart's values.schema.json is not shipped by any installed package and can't be
fetched here, so the keys of values.yaml are checked against ``Z2JH_KEYS``: the subset of
jupyterhub/zero-to-jupyterhub-k8s ``jupyterhub/values.schema.yaml`` (commit 02dd73df,
chart 4.x) that gpulab uses, each path copied from that schema.
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml
from dask_gateway_server.models import User as GatewayUser
from traitlets.config import Config, PyFileConfigLoader

from gpulab_hub.kube import GpulabKubeSpawner
from gpulab_hub.quota import GpulabQuota
from gpulab_hub.quota_file import read_quota_file
from gpulab_hub.slurm import GpulabSlurmSpawner
from gpulab_hub.systemd import GpulabSystemdSpawner

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"

# Dotted paths of z2jh's values.schema.yaml (see the module docstring). A path ending in
# "*" takes any value below it (the schema says additionalProperties: true, or it is a
# k8s-native list/object the chart passes through).
Z2JH_KEYS = {
    "hub.image.name", "hub.image.tag",
    "hub.db.type", "hub.db.pvc.storage", "hub.db.url",
    "hub.extraEnv.*", "hub.extraFiles.*", "hub.extraVolumes.*", "hub.extraVolumeMounts.*",
    "hub.services.*", "hub.config.*", "hub.extraConfig.*", "hub.loadRoles.*",
    "hub.networkPolicy.ingress.*", "hub.networkPolicy.egress.*",
    "hub.service.extraPorts.*",
    "singleuser.image.name", "singleuser.image.tag", "singleuser.defaultUrl",
    "singleuser.startTimeout", "singleuser.storage.type", "singleuser.storage.homeMountPath",
    "singleuser.storage.extraVolumes.*", "singleuser.storage.extraVolumeMounts.*",
    "singleuser.extraEnv.*", "singleuser.networkPolicy.egress.*",
    "singleuser.nodeSelector.*", "singleuser.extraTolerations.*",
    "proxy.service.type",
    "cull.enabled", "cull.timeout",
}


def schema_violations(values, prefix=""):
    """Paths in ``values`` that ``Z2JH_KEYS`` does not allow."""
    bad = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if f"{path}.*" in Z2JH_KEYS or path in Z2JH_KEYS:
            continue
        if isinstance(value, dict) and any(k.startswith(path + ".") for k in Z2JH_KEYS):
            bad += schema_violations(value, path + ".")
        else:
            bad.append(path)
    return bad


@pytest.fixture
def values():
    return yaml.safe_load((KUBE / "values.yaml").read_text())


def test_the_helm_values_parse_and_use_only_chart_keys(values):
    assert schema_violations(values) == []
    assert schema_violations({"hub": {"extraConfg": {}}}) == ["hub.extraConfg"]  # a typo


def z2jh_config(values) -> Config:
    """``c`` as the chart's jupyterhub_config.py leaves it before hub.extraConfig runs:
    hub.config loaded, hub.services listed with generated API tokens."""
    c = Config(values["hub"]["config"])
    c.JupyterHub.spawner_class = "kubespawner"
    c.JupyterHub.services = [
        {"name": name, **service, "api_token": f"token-of-{name}"}
        for name, service in values["hub"]["services"].items()
    ]
    c.Authenticator.admin_users = {"ops"}
    return c


@pytest.fixture
def hub_env(monkeypatch, values, tmp_path):
    """The hub pod's environment: values.yaml's hub.extraEnv, with what the cluster fills
    in (the pod IP, the ledger secret) and the ConfigMap's file at its mount."""
    for name, value in values["hub"]["extraEnv"].items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("POD_IP", "10.4.2.7")
    monkeypatch.setenv("GPULAB_LEDGER_URL", f"sqlite:///{tmp_path}/ledger.sqlite")
    monkeypatch.setenv("GPULAB_QUOTA_FILE", str(KUBE / "quota.yaml"))
    monkeypatch.setenv("GPULAB_SERVICES_CONFIG", str(DEPLOY / "services_config.py"))
    yield
    GpulabQuota.clear_instance()


def test_the_hubs_extra_config_runs_and_sets_up_gpulab(values, hub_env, tmp_path):
    c = z2jh_config(values)
    for name in sorted(values["hub"]["extraConfig"]):
        exec(compile(values["hub"]["extraConfig"][name], name, "exec"), {"c": c})
    assert c.JupyterHub.spawner_class == "gpulab-kube"
    services = {s["name"]: s for s in c.JupyterHub.services}
    quota = services["gpulab-quota"]
    assert quota["url"] == "http://10.4.2.7:10101"
    assert quota["api_token"] == "token-of-gpulab-quota"  # the chart's token is kept
    assert quota["command"][-2:] == ["--config", str(DEPLOY / "services_config.py")]
    assert quota["environment"]["GPULAB_LEDGER_URL"] == f"sqlite:///{tmp_path}/ledger.sqlite"
    dashboards = services["dashboards"]
    assert dashboards["url"] == "http://10.4.2.7:10102"
    assert dashboards["environment"]["GPULAB_RUNS_DIR"] == "/srv/gpulab/runs"
    assert dashboards["environment"]["GPULAB_DASHBOARDS_ORIGINS"] == "hub.example.org"
    assert services["dask-gateway"]["url"] == "http://traefik-dask-gateway"
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert "access:services!service=dashboards" in roles["user"]["scopes"]
    assert roles["gpulab-operator"]["users"] == ["ops"]
    assert c.GpulabKubeSpawner.quota_url == "http://proxy-public/services/gpulab-quota/"
    # The shared quota file: valid policies, the pool as slots (16 GPUs, 14 MIG slices).
    quota = GpulabQuota(config=c)
    assert len(quota.whole_gpus()) == 16 and len(quota.mig_slices()["1g.10gb"]) == 14
    assert quota.policy_for("stu", ["students"]).max_gpus == 1


def test_the_values_profile_resources_shape_a_real_pod(values, hub_env, quota_config,
                                                        make_spawner):
    quota_config.GpulabKubeSpawner = Config(values["hub"]["config"]["GpulabKubeSpawner"])

    class ManifestOnly(GpulabKubeSpawner):
        async def _start(self):
            await self.load_user_options()
            self.manifest = await self.get_pod_manifest()
            return ("127.0.0.1", 8888)

    async def run():
        spawner = make_spawner(ManifestOnly, "ada", options={"profile": "1-gpu"})
        await spawner.start()
        return spawner.manifest.spec

    pod = asyncio.run(run())
    assert pod.node_selector["nvidia.com/gpu.present"] == "true"
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert [t.key for t in pod.tolerations if t.key == "nvidia.com/gpu"] == ["nvidia.com/gpu"]


def load_config(path: Path) -> Config:
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def test_the_quota_services_config_reads_the_shared_settings(hub_env, tmp_path):
    c = load_config(DEPLOY / "services_config.py")
    assert c.GpulabQuota.ledger_url == f"sqlite:///{tmp_path}/ledger.sqlite"
    assert c.GpulabQuota.default_policy["max_session"] == "8h"
    assert c.QuotaService.tick_seconds == 30


@pytest.fixture
def slurm_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GPULAB_LEDGER_URL", f"sqlite:///{tmp_path}/ledger.sqlite")
    monkeypatch.setenv("GPULAB_QUOTA_FILE", str(DEPLOY / "slurm" / "quota.yaml"))
    monkeypatch.setenv("GPULAB_HUB_IP", "10.1.0.2")
    monkeypatch.setenv("GPULAB_RUNS_DIR", "/shared/gpulab/runs")
    monkeypatch.setenv("GPULAB_PUBLIC_HOSTS", "hub.example.org")
    monkeypatch.setenv("GPULAB_ADMINS", "ops, root")
    yield
    GpulabQuota.clear_instance()


def spawner_for(alias):
    return next(e for e in entry_points(group="jupyterhub.spawners") if e.name == alias).load()


def test_the_slurm_config_loads_with_its_spawner_services_and_quota(slurm_env):
    c = load_config(DEPLOY / "slurm" / "jupyterhub_config.py")
    assert spawner_for(c.JupyterHub.spawner_class) is GpulabSlurmSpawner
    assert c.JupyterHub.hub_connect_ip == "10.1.0.2"
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["gpulab-quota"]["url"] == "http://10.1.0.2:10101"
    assert c.Spawner.environment["GPULAB_SLURM_CLUSTER"] == "1"
    assert c.Authenticator.admin_users == {"ops", "root"}
    quota = GpulabQuota(config=c)
    assert len(quota.whole_gpus()) == 32
    assert quota.policy_for("x", []).max_session_seconds == 12 * 3600


def test_the_systemd_config_loads_with_its_spawner_services_and_quota(monkeypatch, tmp_path):
    monkeypatch.setenv("GPULAB_LEDGER_URL", f"sqlite:///{tmp_path}/ledger.sqlite")
    monkeypatch.setenv("GPULAB_QUOTA_FILE", str(DEPLOY / "systemd" / "quota.yaml"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    try:
        c = load_config(DEPLOY / "systemd" / "jupyterhub_config.py")
        assert spawner_for(c.JupyterHub.spawner_class) is GpulabSystemdSpawner
        assert c.GpulabSystemdSpawner.dynamic_users is True
        assert c.JupyterHub.cleanup_servers is False
        assert c.GpulabSystemdSpawner.readwrite_paths == [str(tmp_path / "runs")]
        services = {s["name"]: s for s in c.JupyterHub.services}
        assert services["dashboards"]["environment"]["GPULAB_RUNS_DIR"] == str(tmp_path / "runs")
        assert GpulabQuota(config=c).policy_for("x", []).max_gpus == 1
    finally:
        GpulabQuota.clear_instance()


def test_the_systemd_unit_runs_the_config_it_ships_with():
    unit = (DEPLOY / "systemd" / "jupyterhub.service").read_text()
    assert re.search(r"^ExecStart=\S+/jupyterhub -f \S+/deploy/systemd/jupyterhub_config.py$",
                     unit, re.M)
    assert "StateDirectory=gpulab" in unit and "[Install]" in unit


def test_the_gateway_config_applies_the_shared_policy(hub_env):
    c = load_config(KUBE / "dask_gateway_config.py")
    options = c.Backend.cluster_options(GatewayUser("stu", groups=["students"]))
    config = options.get_configuration(options.parse_options({}), GatewayUser("stu", ["students"]))
    assert config["cluster_max_workers"] == 2  # the students' max_dask_workers in quota.yaml
    gateway_values = yaml.safe_load((KUBE / "dask-gateway-values.yaml").read_text())
    assert gateway_values["gateway"]["auth"]["type"] == "jupyterhub"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_gpus: 2\n", r"unknown settings \['max_gpus'\]"),
        ("static_gpus: 2\ngpu_pools: []\n", "gpu_pools or static_gpus, not both"),
        ("gpu_pools:\n  - {pool: a b, gpus: 1, name: x, memory_gib: 1}\n",
         r"gpu_pools\[0\]: pool must be letters"),
        ("gpu_pools:\n  - {pool: a, gpus: 1}\n", r"missing \['name', 'memory_gib'\]"),
    ],
)
def test_a_bad_quota_file_is_named(tmp_path, text, message):
    path = tmp_path / "quota.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_quota_file(path)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.hub", "Dockerfile.singleuser"])
def test_the_dockerfiles_copy_what_exists(dockerfile):
    text = (KUBE / dockerfile).read_text()
    sources = [
        part for line in text.splitlines() if line.startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    ]
    assert sources and all((ROOT / s).exists() for s in sources), sources
