"""The launcher dashboard's model and view without a browser (a real Dask LocalCluster, a
real training run), and the app served by a real Jupyter server through
jupyter-server-proxy: behind the server's login, refused around it, stopped with it."""

import asyncio
import re

import psutil
import pytest
import requests

import gpulab.dashboards
from gpulab import clusters
from gpulab.dashboards import launcher_app
from gpulab.dashboards.data import RunData
from gpulab.dashboards.launcher import Launcher, LaunchModel
from gpulab.runs import RunStore
from tests.extensions.live_server import LiveServer
from tests.waiting import poll

EVIL = "<img src=x onerror=alert(1)>"
LIMITS = {"max_workers": 2, "workers_in_use": 0, "gpus": 0}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A private cluster registry and run store, a limit of 2 Dask workers."""
    monkeypatch.setenv("GPULAB_MAX_DASK_WORKERS", "2")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("GPULAB_DASHBOARDS_URL", "/services/dashboards/")
    registry = clusters.Registry(tmp_path / "clusters")
    store = RunStore(tmp_path / "runs")
    return {"store": store, "cluster_options": {"registry": registry, "quota": None},
            "limits": LIMITS}


def nothing_started(setup):
    assert clusters.list(registry=setup["cluster_options"]["registry"]) == []
    assert setup["store"].list_runs("alice") == []


def test_within_the_limits_a_cluster_and_a_run_start_and_the_data_shows(setup):
    view = Launcher(**setup, workers=2, run_name=EVIL,
                    hyperparameters={"steps": 25, "lr": 0.3})
    model = view.model
    assert model.launch(), model.error
    assert model.phase == "starting cluster"
    assert model.progress.startswith("cluster starting")
    assert model.wait(240) == "finished", (model.error, model.progress)
    run = model.run
    manifest = run.manifest()
    assert manifest.owner == "alice" and manifest.name == EVIL
    assert manifest.status == "finished" and manifest.world_size == 2
    assert manifest.config["function"] == "digits-mlp" and manifest.config["steps"] == 25
    assert manifest.config["lr"] == 0.3 and manifest.config["cluster"]["workers"] == 2
    assert model.step == 24 and model.progress == "finished: step 24"
    assert model.dashboard_url == f"/services/dashboards/runs/alice/{run.id}"
    data = RunData(run)
    data.refresh()
    assert {"loss", "accuracy", "val_accuracy"} <= set(data.metrics)
    assert data.series("loss").steps.tolist() == list(range(25))
    # The cluster was the run's: it stopped after it, the workers back to the allowance.
    assert clusters.list(registry=setup["cluster_options"]["registry"]) == []

    view.sync()  # what the page shows: progress, the link (escaped), the run's live view
    assert view._progress.object == "finished: step 24"
    assert view._link.visible and f'href="/services/dashboards/runs/alice/{run.id}"' in (
        view._link.object)
    assert EVIL not in view._link.object and not view._error.visible
    assert view._run_view is not None and view._run_view.data.run.id == run.id
    assert view._button.disabled is False


def test_beyond_the_limits_the_reason_shows_and_nothing_starts(setup):
    view = Launcher(**setup, workers=3)
    model = view.model
    assert not model.launch()
    assert model.phase == "refused" and model.field == "workers"
    assert "your limit is 2 at once" in model.error
    view.sync()
    assert view._error.visible and "your limit is 2 at once" in view._error.object
    nothing_started(setup)


def test_gpu_workers_on_a_cpu_server_are_refused(setup, monkeypatch):
    monkeypatch.setenv("GPULAB_ALLOCATED_DEVICES", "")
    model = LaunchModel(**setup, gpus_per_worker=1)
    assert not model.launch()
    assert model.field == "gpus_per_worker" and "this server has none" in model.error
    nothing_started(setup)


BAD_FORMS = [
    ({"hyperparameters": {"lr": 50.0}}, "lr", "between"),
    ({"hyperparameters": {"steps": "many"}}, "steps", "whole number"),
    ({"hyperparameters": {"optimiser": "rmsprop"}}, "optimiser", "one of"),
    ({"hyperparameters": {"dropout": 0.5}}, "dropout", "no hyperparameter"),
    ({"memory_limit": "lots"}, "memory_limit", "size"),
    ({"workers": 0}, "workers", "between 1 and"),
    ({"run_name": "x" * 500}, "run_name", "run name"),
]


@pytest.mark.parametrize(("fields", "field", "message"), BAD_FORMS)
def test_a_bad_field_is_named_and_nothing_starts(setup, fields, field, message):
    model = LaunchModel(**setup, **fields)
    assert not model.launch()
    assert model.field == field, model.error
    assert message in model.error
    nothing_started(setup)


def test_the_form_has_a_widget_per_declared_hyperparameter(setup):
    view = Launcher(**setup)
    labels = [w.label for w in view._hyper]
    assert [label.split(" ")[0] for label in labels] == [
        "steps", "lr", "hidden", "batch_size", "optimiser", "seed"]
    steps = view._hyper[0]
    assert (steps.start, steps.end, steps.value) == (1, 100_000, 60)
    steps.value = 7  # a person types into the widget: the model follows
    assert view.model.hyperparameters["steps"] == 7
    assert view._gpus.options == [0]  # no GPUs on this server: none to offer
    assert "at most 2 Dask workers at once" in view._limits.object


def test_inline_in_a_notebook(setup):
    shown = gpulab.dashboards.launcher(**setup)
    assert isinstance(shown, Launcher)
    assert callable(gpulab.dashboards.launcher)  # the module stays callable once imported


def test_websocket_origin_is_the_page_s_own():
    assert launcher_app.same_origin("http://hub.example:8000", "hub.example:8000", set())
    assert not launcher_app.same_origin("http://evil.example", "hub.example:8000", set())
    assert not launcher_app.same_origin("null", "hub.example:8000", set())
    assert launcher_app.same_origin("https://lab.example", "hub:8000", {"lab.example"})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = LiveServer.start(tmp_path_factory.mktemp("launcher-served"))
    yield server
    server.stop()


def launcher_process(server):
    found = [p for p in psutil.Process(server.process.pid).children(recursive=True)
             if "gpulab.dashboards.launcher_app" in " ".join(p.cmdline())]
    return found[0] if found else None


def test_served_behind_the_server_s_login_only(served):
    page = requests.get(served.url + "gpulab-launcher/", headers=served.auth, timeout=120)
    assert page.status_code == 200 and "gpulab launcher" in page.text
    anonymous = requests.get(served.url + "gpulab-launcher/", allow_redirects=False, timeout=30)
    assert anonymous.status_code in (302, 403)  # to the server's login
    app = launcher_process(served)
    cmdline = " ".join(app.cmdline())
    port = int(re.search(r"--port (\d+)", cmdline).group(1))
    assert "--prefix /gpulab-launcher" in cmdline
    # Around the proxy (another local account): no page, no websocket.
    direct = requests.get(f"http://127.0.0.1:{port}/gpulab-launcher/", allow_redirects=False,
                          timeout=30)
    assert direct.status_code in (302, 403) and "gpulab launcher" not in direct.text
    token = {launcher_app.TOKEN_HEADER: "guessed"}
    guessed = requests.get(f"http://127.0.0.1:{port}/gpulab-launcher/", headers=token,
                           allow_redirects=False, timeout=30)
    assert guessed.status_code in (302, 403)

    async def foreign_websocket():
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.websocket import websocket_connect

        request = HTTPRequest(f"ws://127.0.0.1:{port}/gpulab-launcher/ws",
                              headers={"Origin": "http://evil.example"})
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(request)
        return refused.value.code

    assert asyncio.run(foreign_websocket()) == 403


def test_the_app_stops_with_the_server(served):
    # Last in this module: it stops the module's server (stopping it again is harmless).
    app = launcher_process(served)
    if app is None:  # not started yet when this test runs alone
        assert requests.get(served.url + "gpulab-launcher/", headers=served.auth,
                            timeout=120).status_code == 200
        app = launcher_process(served)
    assert app is not None
    served.stop()
    poll(lambda: not app.is_running() or app.status() == psutil.STATUS_ZOMBIE, timeout=30,
         what="the launcher app to stop with its server")
