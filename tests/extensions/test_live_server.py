"""The extension in a real `jupyter server` process: browser-style cookie auth and XSRF,
and stopping the server stopping every cluster it runs, its kernels' ones included."""


import psutil
import pytest
import requests

from gpulab.clusters import Registry, list_clusters
from tests.extensions.live_server import LiveServer
from tests.waiting import poll


@pytest.fixture
def server(tmp_path):
    live = LiveServer.start(tmp_path)
    yield live
    live.stop()


def login(server) -> requests.Session:
    """A browser's session: the login cookie and the _xsrf cookie, no token header."""
    session = requests.Session()
    session.get(server.url + "login")
    answer = session.post(server.url + "login", allow_redirects=False,
                          data={"password": server.token, "_xsrf": session.cookies["_xsrf"]})
    assert answer.status_code == 302, answer.text
    return session


def test_cookie_writes_need_the_xsrf_token(server):
    session = login(server)
    assert session.get(server.url + "gpulab/clusters").json() == {"clusters": []}
    refused = session.post(server.url + "gpulab/clusters", json={"workers": 1})
    assert refused.status_code == 403 and "_xsrf" in refused.json()["message"]
    for method in ("PATCH", "DELETE"):
        answer = session.request(method, server.url + "gpulab/clusters/000000000000",
                                 json={"workers": 1})
        assert answer.status_code == 403 and "_xsrf" in answer.json()["message"]
    assert session.get(server.url + "gpulab/clusters").json() == {"clusters": []}

    xsrf = {"X-XSRFToken": session.cookies["_xsrf"]}
    created = session.post(server.url + "gpulab/clusters", json={"workers": 1}, headers=xsrf)
    assert created.status_code == 202, created.text
    gone = session.delete(server.url + f"gpulab/clusters/{created.json()['id']}", headers=xsrf)
    assert gone.status_code == 204


def test_without_login_every_route_is_refused(server):
    for method, path in [("GET", "allocation"), ("GET", "clusters"), ("POST", "clusters"),
                         ("GET", "clusters/000000000000"), ("PATCH", "clusters/000000000000"),
                         ("DELETE", "clusters/000000000000")]:
        answer = requests.request(method, server.url + "gpulab/" + path, json={"workers": 1})
        assert answer.status_code == 403, (method, path, answer.status_code)


def start_kernel_cluster(server) -> None:
    """A notebook's way: a kernel of this server runs clusters.start()."""
    from jupyter_client import BlockingKernelClient

    kernel = requests.post(server.url + "api/kernels", headers=server.auth, json={}).json()
    client = BlockingKernelClient(
        connection_file=f"{server.env['JUPYTER_RUNTIME_DIR']}/kernel-{kernel['id']}.json")
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        shown = []
        reply = client.execute_interactive(
            "from gpulab import clusters\n"
            "cluster = clusters.start(workers=1, name='from-a-notebook')\n", timeout=120,
            output_hook=lambda msg: shown.append(msg))
        assert reply["content"]["status"] == "ok", reply["content"]
        # Progress while it started: one display, updated in place, ending "running".
        displays = [m for m in shown
                    if m["msg_type"] in ("display_data", "update_display_data")]
        assert displays and displays[0]["msg_type"] == "display_data"
        last = displays[-1]["content"]["data"]
        assert "running, 1/1 workers ready" in last["text/plain"]
        assert "<progress" in last["text/html"]
    finally:
        client.stop_channels()


def test_stopping_the_server_stops_all_its_clusters(server):
    created = requests.post(server.url + "gpulab/clusters", headers=server.auth,
                            json={"name": "from-the-sidebar", "workers": 2})
    assert created.status_code == 202
    start_kernel_cluster(server)

    def listed():
        answer = requests.get(server.url + "gpulab/clusters", headers=server.auth).json()
        return {c["name"]: c for c in answer["clusters"]}

    poll(lambda: {c["status"] for c in listed().values()} == {"running"}
             and len(listed()) == 2, 60, "both clusters to run")
    kinds = {name: c["owner"]["kind"] for name, c in listed().items()}
    assert kinds == {"from-the-sidebar": "server", "from-a-notebook": "kernel"}
    # The server, its kernel, and every worker process are in the server's process tree.
    tree = psutil.Process(server.process.pid).children(recursive=True)
    assert len(tree) >= 4, [p.cmdline() for p in tree]

    assert server.stop() == 0
    gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], \
        f"left running: {[p.cmdline() for p in alive]}"
    # The server closed its own cluster's record on the way out. Jupyter server kills its
    # kernels outright at exit (shutdown_all(now=True)): the kernel's record is left stale,
    # its owner gone, and dropped at the next look.
    registry = Registry(server.env["GPULAB_CLUSTERS_DIR"])
    assert [r["name"] for r in registry.records()] in ([], ["from-a-notebook"])
    assert list_clusters(registry=registry, quota=None) == []
    assert registry.records() == []
