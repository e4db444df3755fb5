"""gpulab.clusters through a real Dask Gateway: start, connect, list, scale, stop, the
worker limit, cluster options, the quota ledger and the sidebar's REST API.

Fixtures
- ``gateway_server`` (module): a real ``dask-gateway-server -f gateway_config.py`` on free
  ports of 127.0.0.1, clusters as processes of this account, a password for every user;
  stopped at the end, with no scheduler or worker process left behind.
- ``gateway_env``: this process's environment pointed at it (``GPULAB_DASK_GATEWAY_*``,
  basic auth as user "ada", no hub, no worker limit); after the test, no cluster of the
  test is left at the gateway and the local registry was never touched.

Helpers
- ``at_gateway(server, every=False)``: the user's clusters by name and status, asked of the
  gateway's REST API directly (not through gpulab).
- ``LedgerQuota``: the quota service's cluster routes over a real ledger in this process.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from gpulab import clusters
from gpulab.clusters.gateway import ID_PATTERN, GatewayBackend, GatewayConfig, ledger_key
from gpulab.quota.client import QuotaClient, QuotaServiceError
from gpulab_hub.ports import free_port
from tests.clusters.conftest import CLEAN_ENV

pytest.importorskip("dask_gateway_server")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
USER = "ada"
OPENAPI = REPO / "extensions" / "gpulab_jupyterlab" / "openapi.yaml"


def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def _processes_in(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if str(folder) in process.cwd():
                found.append(process)
        except psutil.Error:
            continue
    return found


def _start_gateway(state: Path) -> tuple[subprocess.Popen, dict]:
    """One try at starting the gateway on free ports: (process, settings), or (process, None)
    when it did not come up (a port taken meanwhile: free ports are only free when asked)."""
    ports = {name: free_port() for name in ("API", "HTTP", "TCP")}
    password = secrets.token_hex(8)
    env = {
        **os.environ,
        **{f"GPULAB_TEST_GATEWAY_{name}_PORT": str(port) for name, port in ports.items()},
        "GPULAB_TEST_GATEWAY_PASSWORD": password,
        "GPULAB_TEST_GATEWAY_STATE": str(state),
    }
    log = state / "gateway.log"
    with open(log, "a") as out:
        process = subprocess.Popen(
            [str(BIN / "dask-gateway-server"), "-f", str(HERE / "gateway_config.py")],
            cwd=state, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = {
        "address": f"http://127.0.0.1:{ports['HTTP']}",
        "proxy": f"127.0.0.1:{ports['TCP']}",
        "password": password,
        "state": state,
        "log": log,
    }
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        if "address already in use" in log.read_text():
            break
        try:
            if requests.get(f"{server['address']}/api/health", timeout=2).ok:
                return process, server
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    _stop_gateway(process)
    return process, None


def _stop_gateway(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # it stops the clusters it still runs, then exits
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory):
    state = tmp_path_factory.mktemp("gateway")
    for _ in range(3):
        process, server = _start_gateway(state)
        if server is not None:
            break
    else:
        raise AssertionError(f"the gateway did not start: {(state / 'gateway.log').read_text()}")
    try:
        yield server
    finally:
        _stop_gateway(process)
    assert process.returncode == 0, f"the gateway exited {process.returncode}"
    wait_until(lambda: not _processes_in(state), 20, "the gateway's schedulers and workers to exit")


def at_gateway(server, every=False):
    """{cluster name: status} of USER's clusters, from the gateway's REST API itself."""
    query = "?status=PENDING,RUNNING,STOPPING,STOPPED,FAILED" if every else ""
    answer = requests.get(f"{server['address']}/api/v1/clusters/{query}",
                          auth=(USER, server["password"]), timeout=10)
    answer.raise_for_status()
    return {name: report["status"] for name, report in answer.json().items()}


def settings(server):
    return {
        "GPULAB_DASK_GATEWAY_ADDRESS": server["address"],
        "GPULAB_DASK_GATEWAY_PROXY_ADDRESS": server["proxy"],
        "GPULAB_DASK_GATEWAY_AUTH": "basic",
        "GPULAB_DASK_GATEWAY_USER": USER,
        "GPULAB_DASK_GATEWAY_PASSWORD": server["password"],
    }


@pytest.fixture
def gateway_env(gateway_server, tmp_path, monkeypatch):
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings(gateway_server).items():
        monkeypatch.setenv(name, value)
    local = tmp_path / "local-registry"
    monkeypatch.setenv("GPULAB_CLUSTERS_DIR", str(local))
    before = set(at_gateway(gateway_server))
    yield gateway_server
    left = set(at_gateway(gateway_server)) - before
    for name in left:  # stop them anyway, so the next test starts clean
        requests.delete(f"{gateway_server['address']}/api/v1/clusters/{name}",
                        auth=(USER, gateway_server["password"]), timeout=10)
    assert not left, f"the test left gateway clusters running: {left}"
    assert not local.exists(), "the gateway backend wrote to the local registry"


# Configuration and ids (no gateway needed) ---------------------------------------------------

BASIC = {"GPULAB_DASK_GATEWAY_ADDRESS": "https://gw.example.org/",
         "GPULAB_DASK_GATEWAY_AUTH": "basic", "GPULAB_DASK_GATEWAY_USER": "ada"}
BAD_SETTINGS = [
    ({"GPULAB_DASK_GATEWAY_ADDRESS": "gw.example.org:8000"}, "GPULAB_DASK_GATEWAY_ADDRESS"),
    ({"GPULAB_DASK_GATEWAY_ADDRESS": "ftp://gw"}, "GPULAB_DASK_GATEWAY_ADDRESS"),
    ({**BASIC, "GPULAB_DASK_GATEWAY_AUTH": "kerberos"}, "GPULAB_DASK_GATEWAY_AUTH"),
    ({**BASIC, "GPULAB_DASK_GATEWAY_USER": ""}, "GPULAB_DASK_GATEWAY_USER"),
    ({"GPULAB_DASK_GATEWAY_ADDRESS": "https://gw"}, "JUPYTERHUB_API_TOKEN"),
    ({**BASIC, "GPULAB_DASK_GATEWAY_PROXY_ADDRESS": "gw/../x:1"},
     "GPULAB_DASK_GATEWAY_PROXY_ADDRESS"),
]


@pytest.mark.parametrize(("env", "named"), BAD_SETTINGS)
def test_bad_gateway_settings_are_refused_naming_the_variable(env, named):
    with pytest.raises(ValueError, match=named):
        GatewayConfig.from_env(env)


def test_gateway_settings_from_the_environment():
    assert GatewayConfig.from_env({}) is None
    assert GatewayConfig.from_env({"GPULAB_DASK_GATEWAY_ADDRESS": "  "}) is None
    hub = GatewayConfig.from_env({"GPULAB_DASK_GATEWAY_ADDRESS": "https://gw/",
                                  "JUPYTERHUB_API_TOKEN": "secret-token"})
    assert (hub.address, hub.auth, hub.token) == ("https://gw", "jupyterhub", "secret-token")
    assert "secret-token" not in repr(hub)
    basic = GatewayConfig.from_env({**BASIC, "GPULAB_DASK_GATEWAY_PASSWORD": "pw",
                                    "GPULAB_DASK_GATEWAY_PROXY_ADDRESS": "gw:8786"})
    assert (basic.auth, basic.user, basic.proxy_address) == ("basic", "ada", "gw:8786")
    assert "pw" not in repr(basic)


def test_gateway_ids_are_checked_before_any_request_and_fit_the_ledger():
    plain, namespaced = "0123456789abcdef" * 2, "dask-gateway." + "f" * 32
    assert ledger_key(plain) == plain
    assert ledger_key(namespaced) == "dask-gateway-" + "f" * 32
    long = ("n" * 63) + "." + "a" * 32
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", ledger_key(long))
    assert ledger_key(long).endswith("a" * 32)
    # The address is never contacted: a malformed id is not found before any request.
    backend = GatewayBackend(GatewayConfig("http://127.0.0.1:9", None, "basic", "ada", "pw"))
    for bad in ("nope", "a" * 12, "../" + plain, plain + "/scale", plain.upper(),
                plain + "?wait", "-x." + plain, "", None):
        with pytest.raises(clusters.ClusterNotFound):
            backend.get(bad)
        with pytest.raises(clusters.ClusterNotFound):
            backend.stop(bad)


def test_without_a_gateway_the_local_backend_runs_and_dask_gateway_is_not_imported(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GPULAB_DASK_GATEWAY") and k not in CLEAN_ENV}
    env["GPULAB_CLUSTERS_DIR"] = str(tmp_path / "clusters")
    code = ("import sys; from gpulab import clusters; assert clusters.list() == []; "
            "assert 'dask_gateway' not in sys.modules, 'imported'; print('local')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "local", done.stderr


# Against the real gateway --------------------------------------------------------------------


def test_start_connect_list_scale_stop_at_the_gateway(gateway_env, capsys):
    cluster = clusters.start(workers=2, name="prep", threads_per_worker=2, memory_limit="1 GiB")
    assert cluster.status == "running" and ID_PATTERN.fullmatch(cluster.id)
    assert "cluster 'prep': running, 2/2 workers ready" in capsys.readouterr().err
    assert at_gateway(gateway_env) == {cluster.id: "RUNNING"}
    public = cluster.to_json()
    assert public["owner"] == {"kind": "gateway", "pid": None}
    assert public["dashboard_link"] == f"{gateway_env['address']}/clusters/{cluster.id}/status"
    assert requests.get(public["dashboard_link"], timeout=10).ok  # the gateway serves it
    # The spec became the gateway's cluster options: 2 threads and 1 GiB per worker.
    assert [(w["nthreads"], w["memory_limit"]) for w in public["workers"]] == [(2, 2**30)] * 2

    client = clusters.connect(cluster.id)
    try:
        assert client.submit(lambda x: x * 2, 21).result() == 42
        assert len(client.scheduler_info()["workers"]) == 2
    finally:
        client.close()

    [listed] = clusters.list()
    assert (listed.id, listed.name, listed.status) == (cluster.id, "prep", "running")
    assert listed.to_json()["workers_requested"] == 2

    clusters.scale(cluster.id, 1)
    assert clusters.get(cluster.id).to_json()["workers_requested"] == 1
    wait_until(lambda: len(cluster.refresh().workers) == 1, 30, "a scale down to 1 worker")

    clusters.stop(cluster.id)
    assert cluster.id not in at_gateway(gateway_env)
    assert clusters.list() == []
    with pytest.raises(clusters.ClusterNotFound):
        clusters.get(cluster.id)


def test_over_the_worker_limit_is_refused_and_nothing_is_created(gateway_env, monkeypatch):
    monkeypatch.setenv("GPULAB_MAX_DASK_WORKERS", "3")
    first = clusters.start(workers=2, name="prep", progress=False)
    try:
        every = at_gateway(gateway_env, every=True)
        with pytest.raises(clusters.ClusterLimitError) as refused:
            clusters.start(workers=2, name="train", progress=False)
        message = str(refused.value)
        assert "asks for 2 but your limit is 3 at once and 2 are in use" in message
        assert "cluster 'prep': 2" in message
        assert (refused.value.reason, refused.value.limit, refused.value.in_use) == (
            "max_dask_workers", 3, 2)
        assert at_gateway(gateway_env, every=True) == every  # nothing submitted
        with pytest.raises(clusters.ClusterLimitError, match="asks for 4 but your limit is 3"):
            first.scale(4)
        assert first.refresh().to_json()["workers_requested"] == 2
    finally:
        first.stop()


SPEC_REFUSALS = [
    ({"gpus_per_worker": 1}, "gpus_per_worker", "has no 'gpus_per_worker' option"),
    ({"threads_per_worker": 8}, "threads_per_worker", "'worker_cores' option refuses 8"),
    ({"memory_limit": "64 GiB"}, "memory_limit", "'worker_memory' option refuses 64"),
    ({"protocol": "tcp"}, "protocol", "always talks TLS"),
    ({"workers": 0}, "workers", "between 1 and 512"),
]


@pytest.mark.parametrize(("fields", "field", "says"), SPEC_REFUSALS)
def test_a_spec_the_gateway_cannot_honour_is_refused_naming_the_field(
        gateway_env, fields, field, says):
    every = at_gateway(gateway_env, every=True)
    with pytest.raises(clusters.SpecError, match=re.escape(says)) as refused:
        clusters.start(progress=False, **{"workers": 1, **fields})
    assert refused.value.field == field
    assert at_gateway(gateway_env, every=True) == every


class LedgerQuota(QuotaClient):
    """The quota service's cluster routes (``hub/gpulab_hub/quota_service.py``) over a real
    ledger in this process: the same ledger calls and the same answers for its refusals.
    (tests/e2e runs the service itself, behind a hub.)"""

    def __init__(self, ledger, user, max_workers):
        super().__init__("http://quota.invalid/services/gpulab-quota/", "unused")
        self.ledger, self.user, self.max_workers = ledger, user, max_workers

    def call(self, method, path, body=None):
        from gpulab.quota.ledger import ClusterDenied, ClusterRequestError, UnknownCluster

        key = path.rsplit("/", 1)[-1]
        try:
            if (method, path) == ("POST", "api/clusters"):
                row = self.ledger.admit_cluster(user=self.user, **body,
                                                max_workers=self.max_workers)
            elif method == "PATCH":
                row = self.ledger.scale_cluster(self.user, key, body["workers"],
                                                max_workers=self.max_workers)
            elif method == "DELETE":
                row = self.ledger.release_cluster(self.user, key, reason="stopped")
                if row is None:
                    raise QuotaServiceError(404, {"message": f"no running cluster {key!r}"})
            else:
                raise AssertionError(f"unexpected quota call {method} {path}")
        except ClusterRequestError as e:
            raise QuotaServiceError(400, {"message": str(e), "field": e.field}) from None
        except ClusterDenied as e:
            raise QuotaServiceError(e.status_code, {"message": e.message, "reason": e.reason,
                                                    "limit": e.limit, "in_use": e.in_use}) from None
        except UnknownCluster as e:
            raise QuotaServiceError(404, {"message": str(e)}) from None
        return {"cluster": row.to_json()}


def test_the_quota_ledger_admits_scales_and_releases_gateway_clusters(gateway_env, tmp_path):
    from gpulab.quota.ledger import Ledger
    from gpulab.quota.policy import Policy

    with Ledger(f"sqlite:///{tmp_path}/ledger.sqlite") as ledger:
        ledger.admit(user=USER, server="", gpus=0, policy=Policy(), devices=[])
        quota = LedgerQuota(ledger, USER, max_workers=3)
        cluster = clusters.start(workers=2, name="prep", quota=quota, progress=False)
        try:
            [row] = ledger.open_clusters(USER)
            assert (row.key, row.name, row.workers, row.gpus) == (
                ledger_key(cluster.id), "prep", 2, 0)
            # The ledger's limit (all the user's servers): refused there, and the cluster the
            # gateway had been asked for is stopped at once.
            with pytest.raises(clusters.ClusterLimitError, match="limit") as refused:
                clusters.start(workers=2, quota=quota, progress=False)
            assert refused.value.reason == "max_dask_workers"
            assert list(at_gateway(gateway_env)) == [cluster.id]
            assert len(ledger.open_clusters(USER)) == 1
            cluster.scale(1)
            assert [r.workers for r in ledger.open_clusters(USER)] == [1]
        finally:
            cluster.stop()
        assert ledger.open_clusters(USER) == []


def _schema_validator(name):
    """A JSON Schema validator for one of openapi.yaml's schemas (OpenAPI 3.0's
    ``nullable`` made JSON Schema's null)."""
    import jsonschema

    def convert(node):
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: convert(value) for key, value in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node

    components = convert(yaml.safe_load(OPENAPI.read_text())["components"])
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": components})


def test_the_rest_api_starts_a_gateway_cluster_without_waiting(gateway_env, tmp_path):
    from tests.extensions.live_server import LiveServer

    valid = _schema_validator("Cluster")
    server = LiveServer.start(tmp_path / "server", settings(gateway_env))
    try:
        api = f"{server.url}gpulab/clusters"
        created = requests.post(api, json={"name": "rest", "workers": 1}, headers=server.auth,
                                timeout=60)
        assert created.status_code == 202, created.text
        body = created.json()
        valid.validate(body)
        assert (body["status"], body["name"], body["owner"]) == (
            "starting", "rest", {"kind": "gateway", "pid": None})
        assert created.headers["Location"].endswith(f"/gpulab/clusters/{body['id']}")

        def running():
            answer = requests.get(f"{api}/{body['id']}", headers=server.auth, timeout=30)
            assert answer.status_code == 200, answer.text
            cluster = answer.json()
            assert cluster["status"] in ("starting", "running"), cluster
            return cluster["status"] == "running" and len(cluster["workers"]) == 1 and cluster

        valid.validate(wait_until(running, 60, "the cluster to run"))
        listed = requests.get(api, headers=server.auth, timeout=30).json()["clusters"]
        assert [c["id"] for c in listed] == [body["id"]]
        valid.validate(listed[0])
        # Another process of the user (this one) sees the same cluster, name and all.
        assert clusters.get(body["id"]).name == "rest"

        scaled = requests.patch(f"{api}/{body['id']}", json={"workers": 2},
                                headers=server.auth, timeout=60)
        assert scaled.status_code == 200 and scaled.json()["workers_requested"] == 2
        deleted = requests.delete(f"{api}/{body['id']}", headers=server.auth, timeout=60)
        assert deleted.status_code == 204
        gone = requests.get(f"{api}/{body['id']}", headers=server.auth, timeout=30)
        assert gone.status_code == 404 and "no cluster" in gone.json()["message"]
        malformed = requests.get(f"{api}/..%2f..%2fapi", headers=server.auth, timeout=30)
        assert malformed.status_code == 404
        assert body["id"] not in at_gateway(gateway_env)
    finally:
        server.stop()
