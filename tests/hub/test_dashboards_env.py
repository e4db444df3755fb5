"""What a user's server is told about the dashboards service (``dashboards_env``), from
JupyterHub's own ``Service`` object: the runs root and links switch of the service's entry,
and its URL (the public URL when the hub has one, else the path under the base URL)."""

from urllib.parse import urlparse

from jupyterhub.services.service import Service

from gpulab_hub.dashboards_env import dashboards_env


def service(base_url="/"):
    return Service(name="dashboards", url="http://127.0.0.1:9123", base_url=base_url,
                   environment={"GPULAB_RUNS_DIR": "/srv/state/runs", "GPULAB_RUN_LINKS": "0",
                                "GPULAB_LEDGER_URL": "sqlite:///secret.sqlite"})


def test_servers_get_the_runs_root_the_links_switch_and_the_path():
    env = dashboards_env({"services": {"dashboards": service()}})
    assert env == {"GPULAB_RUNS_DIR": "/srv/state/runs", "GPULAB_RUN_LINKS": "0",
                   "GPULAB_DASHBOARDS_URL": "/services/dashboards/"}  # not the ledger


def test_the_url_is_public_when_the_hub_has_a_public_url_and_base_url():
    settings = {"services": {"dashboards": service("/lab/")},
                "public_url": urlparse("https://gpus.example.org/lab/")}
    env = dashboards_env(settings)
    assert env["GPULAB_DASHBOARDS_URL"] == "https://gpus.example.org/lab/services/dashboards/"


def test_no_service_no_variables():
    assert dashboards_env({"services": {}}) == {}
    assert dashboards_env({}) == {}
