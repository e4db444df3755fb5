"""Clusters through the whole stack: the hub's proxy, the user's server and its gpulab
extension, the core, the quota service with the server's own token, and the ledger."""


import psutil
import pytest
import requests

from gpulab.quota.ledger import Ledger
from tests.waiting import poll

pytestmark = pytest.mark.e2e
SERVICE = "/services/gpulab-quota"


def test_a_cluster_is_admitted_counted_proxied_and_ends_with_its_server(hub, admin):
    user = "dora"
    assert admin.api("POST", f"/users/{user}").status_code in (201, 409)
    policy = requests.put(f"{hub.url}{SERVICE}/api/policies/users/{user}",
                          json={"max_dask_workers": 3},
                          headers={"Authorization": f"token {admin.token}"}, timeout=30)
    assert policy.status_code == 200, policy.text
    assert admin.api("POST", f"/users/{user}/server").status_code in (201, 202)
    poll(lambda: admin.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready"),
         90, "the server to be ready")
    base = f"{hub.url}/user/{user}/gpulab"
    auth = {"Authorization": f"token {admin.token}"}
    ledger = Ledger(f"sqlite:///{hub.state_dir / 'ledger.sqlite'}")

    def get(path=""):
        return requests.get(f"{base}/{path}", headers=auth, timeout=30)

    created = requests.post(f"{base}/clusters", json={"name": "prep", "workers": 2},
                            headers=auth, timeout=60)
    assert created.status_code == 202, created.text
    cluster_id = created.json()["id"]
    running = poll(lambda: (c := get(f"clusters/{cluster_id}").json())["status"] == "running"
                   and len(c["workers"]) == 2 and c, 90, "the cluster to run")
    # The quota service admitted it with the server's token; the ledger holds it.
    [row] = ledger.open_clusters(user)
    assert (row.key, row.workers, row.server) == (cluster_id, 2, "")
    allocation = get("allocation").json()
    assert allocation["user"] == user and allocation["quota"] is not None
    assert allocation["dask_workers"] == {"limit": 3, "in_use": 2}

    refused = requests.post(f"{base}/clusters", json={"workers": 2}, headers=auth, timeout=60)
    assert refused.status_code == 403, refused.text
    assert "your limit is 3 at once and 2 are in use" in refused.json()["message"]
    assert len(ledger.open_clusters(user)) == 1

    scaled = requests.patch(f"{base}/clusters/{cluster_id}", json={"workers": 3}, headers=auth,
                            timeout=60)
    assert scaled.status_code == 200, scaled.text
    assert ledger.open_clusters(user)[0].workers == 3

    # The Dask dashboard, through jupyter-server-proxy, behind the server's own login.
    dashboard = f"{hub.url}/user/{user}/{running['dashboard_link']}"
    page = requests.get(dashboard, headers=auth, timeout=30)
    assert page.status_code == 200 and "Dask" in page.text, page.text[:300]
    anonymous = requests.get(dashboard, timeout=30, allow_redirects=False)
    assert anonymous.status_code in (302, 403)

    pid = admin.api("GET", f"/users/{user}").json()["servers"][""]["state"]["pid"]
    tree = psutil.Process(pid).children(recursive=True)
    assert len(tree) >= 3  # the cluster's worker processes, at least
    assert admin.api("DELETE", f"/users/{user}/server").status_code in (202, 204)
    poll(lambda: not admin.api("GET", f"/users/{user}").json()["servers"], 60,
         "the server to stop")
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert ledger.open_clusters(user) == []
