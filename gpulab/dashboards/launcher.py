"""The launcher dashboard: a form that starts a Dask cluster and a training run, then shows
that run live.

``LaunchModel`` (a ``param.Parameterized``) owns the form's values and the launch; it calls
the same functions as the sidebar and the notebook API — ``gpulab.clusters.start`` (which
checks the user's limits and the quota service) and ``gpulab.training.run`` — and no second
implementation of either. ``Launcher`` (a ``Viewer``) draws the form from it: one widget
per field and per declared hyperparameter of the chosen training function (see
``gpulab.training.registry``), the progress, the refusal, and once the run exists, its live
``RunView`` and the link to its dashboard on the hub's dashboards service.

In a notebook: ``gpulab.dashboards.launcher()`` (this module is callable for that) or
``Launcher()`` as a cell's last expression. Served from the user's own server by
``launcher_app`` behind jupyter-server-proxy (so behind that server's login).
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
import time
import types
from typing import Any

import panel as pn
import param

from gpulab.dashboards import urls
from gpulab.dashboards.live import LiveViewer

PHASES = ("ready", "starting cluster", "training", "finished", "failed", "refused")
TICK_MS = 500


def _owner() -> str:
    # The same owner as training.run's own runs: the hub's user, else the login.
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def server_limits() -> dict[str, Any]:
    """What the form shows as limits: read as the sidebar's allocation card reads them
    (``gpulab.allocation.describe``: the spawner's env, and the quota service if any)."""
    from gpulab import allocation

    described = allocation.describe()
    workers = described.get("dask_workers") or {}
    return {"max_workers": workers.get("limit"), "workers_in_use": workers.get("in_use"),
            "gpus": len(described.get("gpus") or []), "quota_error": described.get("quota_error")}


class LaunchModel(param.Parameterized):
    """The launcher's state: the form's values, then the launch's progress and outcome.

    ``launch()`` checks everything, is admitted or refused at once (``error``/``field``
    say why; nothing started), then goes on in a background thread: the cluster starts,
    the run trains, and the cluster stops afterwards unless ``keep_cluster``. ``phase`` and
    ``progress`` follow it; ``run`` is the ``gpulab.runs.Run`` once it exists.
    """

    function = param.Selector(default=None, objects=[], doc="A registered training function.")
    hyperparameters = param.Dict(default={}, doc="Values for the function's parameters.")
    workers = param.Integer(default=1, doc="Dask workers (one rank each).")
    threads_per_worker = param.Integer(default=1)
    memory_limit = param.String(default="", doc='Per worker ("2 GiB"); empty: Dask decides.')
    gpus_per_worker = param.Integer(default=0)
    run_name = param.String(default="", doc="The run's name (empty: the function's).")
    keep_cluster = param.Boolean(default=False, doc="Leave the cluster up after the run.")

    limits = param.Dict(default={}, doc="The server's limits, as server_limits() reads them.")
    phase = param.Selector(default="ready", objects=list(PHASES))
    progress = param.String(default="", doc="What is happening now, for a person.")
    error = param.String(default="", doc="Why the last launch was refused or failed.")
    field = param.String(default="", doc="The form field the refusal names, if any.")
    step = param.Integer(default=None, allow_None=True, doc="The last step rank 0 logged.")
    run = param.Parameter(default=None, doc="The run, once created.")
    dashboard_url = param.String(default="", doc="The run on the hub's dashboards service.")

    def __init__(self, *, store: Any = None, cluster_options: dict[str, Any] | None = None,
                 limits: dict[str, Any] | None = None, **params: Any):
        from gpulab.training import registry

        names = registry.names()
        given = dict(params.pop("hyperparameters", None) or {})
        function = params.pop("function", None) or (names[0] if names else None)
        super().__init__(**params)
        self.param.function.objects = names
        if function is not None:
            self.function = function  # resets the hyperparameters to its defaults
        self.hyperparameters = {**self.hyperparameters, **given}
        self.limits = limits if limits is not None else server_limits()
        self.store = store  # a RunStore, a root for one, or None: the default store
        self.cluster_options = dict(cluster_options or {})  # e.g. registry=, quota= (tests)
        self.cluster: Any = None
        self._thread: threading.Thread | None = None

    @param.depends("function", watch=True)
    def _defaults_of_function(self) -> None:
        from gpulab.training import registry

        if self.function:
            self.hyperparameters = registry.get(self.function).defaults()

    @property
    def busy(self) -> bool:
        return self.phase in ("starting cluster", "training")

    def _refuse(self, message: str, field: str) -> bool:
        self.param.update(error=message, field=field, phase="refused", progress="")
        return False

    def launch(self) -> bool:
        """Check the form and start; False (with ``error`` and ``field``) if refused."""
        from gpulab import clusters
        from gpulab.training import registry

        if self.busy:
            return self._refuse("a launch is already under way; wait for it to end", "launch")
        self.param.update(error="", field="", run=None, dashboard_url="", step=None)
        try:
            entry = registry.get(self.function)
            values = entry.check(self.hyperparameters)
            spec = clusters.ClusterSpec.build(
                workers=self.workers, threads_per_worker=self.threads_per_worker,
                memory_limit=self.memory_limit.strip() or None,
                gpus_per_worker=self.gpus_per_worker)
            name = _run_name(self.run_name, entry.name)
        except (registry.HyperparameterError, clusters.SpecError) as e:
            return self._refuse(str(e), e.field)
        self.param.update(phase="starting cluster", progress="cluster starting: admitting")
        try:  # admitted or refused now; the workers start in the background
            self.cluster = clusters.start(spec, wait=False, progress=False,
                                          **self.cluster_options)
        except clusters.ClusterLimitError as e:
            return self._refuse(str(e), "workers" if e.reason == "max_dask_workers" else
                                "gpus_per_worker" if e.reason == "gpus" else "cluster")
        except (clusters.SpecError, clusters.GatewayError) as e:
            return self._refuse(str(e), getattr(e, "field", "cluster"))
        config = {"function": entry.name, **values,
                  "cluster": {k: v for k, v in spec.to_json().items() if v is not None}}
        self._thread = threading.Thread(target=self._carry_on, args=(entry, values, name,
                                                                     config, spec.workers),
                                        name="gpulab-launcher", daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float = 300.0) -> str:
        """Block until the launch ends (tests, scripts); the final phase."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.phase

    # -- the background part --------------------------------------------------------------

    def _carry_on(self, entry: Any, values: dict[str, Any], name: str,
                  config: dict[str, Any], workers: int) -> None:
        from gpulab import training
        from gpulab.runs import RunStore

        cluster, run = self.cluster, None
        try:
            deadline = time.monotonic() + 180
            while cluster.refresh().status == "starting":
                self.progress = (f"cluster starting: {len(cluster.workers)}/{workers} "
                                 "workers ready")
                if time.monotonic() > deadline:
                    raise TimeoutError("the cluster did not start within 180 s")
                time.sleep(0.2)
            cluster.wait(timeout=5)
            store = self.store if isinstance(self.store, RunStore) else RunStore(self.store)
            run = store.create(_owner(), name, config=config, world_size=workers, start=True)
            self.param.update(run=run, phase="training", progress="training: starting ranks",
                              dashboard_url=urls.run_url(run.owner, run.id))
            outcome: dict[str, Any] = {}

            def train() -> None:
                try:
                    outcome["result"] = training.run(entry.bind(values), cluster, run=run,
                                                     world_size=workers, progress=False)
                except BaseException as e:  # noqa: BLE001 - reported below, in the form
                    outcome["error"] = e

            trainer = threading.Thread(target=train, name="gpulab-launcher-train", daemon=True)
            trainer.start()
            cursor = None
            while trainer.is_alive():
                trainer.join(0.25)
                cursor = self._follow(run, cursor)
            self._follow(run, cursor)
            if "error" in outcome:
                raise outcome["error"]
            self.param.update(phase="finished", progress=f"finished: step {self.step}")
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the person sees it
            message = str(e).split("\n\n")[0]
            if run is not None and run.manifest().status == "running":
                run.fail(e)
            self.param.update(phase="failed", error=message, field="", progress="failed")
        finally:
            if not self.keep_cluster and cluster is not None:
                try:
                    cluster.stop()
                except Exception as e:  # noqa: BLE001 - already gone is fine
                    self.param.update(error=self.error or f"could not stop the cluster: {e}")

    def _follow(self, run: Any, cursor: Any) -> Any:
        records, cursor = run.read_metrics(cursor)
        steps = [r["step"] for r in records if r.get("rank", 0) == 0
                 and isinstance(r.get("step"), int)]
        if steps:
            self.param.update(step=max(steps), progress=f"training: step {max(steps)}")
        return cursor


def _run_name(name: str, default: str) -> str:
    from gpulab.runs.ids import check_name
    from gpulab.training.registry import HyperparameterError

    try:
        return check_name(name.strip() or default)
    except ValueError as e:
        raise HyperparameterError(f"run name: {e}", field="run_name") from None


class Launcher(LiveViewer):
    """The form, its progress and the launched run's live view (see the module)."""

    model = param.ClassSelector(class_=LaunchModel)
    period = param.Integer(default=TICK_MS, bounds=(100, None),
                           doc="Milliseconds between syncs of the form with the launch.")

    def __init__(self, **params: Any):
        model_params = {k: params.pop(k) for k in list(params)
                        if k in LaunchModel.param and k != "name"}
        for key in ("store", "cluster_options", "limits"):
            if key in params:
                model_params[key] = params.pop(key)
        if "model" not in params:
            params["model"] = LaunchModel(**model_params)
        super().__init__(**params)
        m = self.model
        self._function = pn.widgets.Select(label="Training function",
                                           options=m.param.function.objects, value=m.function,
                                           css_classes=["gpulab-form-function"])
        self._function.link(m, value="function")
        self._hyper = pn.Column()
        self._workers = pn.widgets.IntInput(label="Workers", value=m.workers, start=1, end=512,
                                            css_classes=["gpulab-form-workers"])
        self._threads = pn.widgets.IntInput(label="Threads per worker",
                                            value=m.threads_per_worker, start=1, end=256,
                                            css_classes=["gpulab-form-threads"])
        self._memory = pn.widgets.TextInput(label="Memory per worker", value=m.memory_limit,
                                            placeholder="e.g. 2 GiB (empty: Dask decides)",
                                            css_classes=["gpulab-form-memory"])
        gpu_options = [0, 1] if m.limits.get("gpus") else [0]
        self._gpus = pn.widgets.Select(label="GPUs per worker", options=gpu_options,
                                       value=m.gpus_per_worker, css_classes=["gpulab-form-gpus"])
        self._name = pn.widgets.TextInput(label="Run name", value=m.run_name,
                                          placeholder="(the function's name)",
                                          css_classes=["gpulab-form-run-name"])
        self._keep = pn.widgets.Checkbox(label="Keep the cluster after the run",
                                         value=m.keep_cluster, css_classes=["gpulab-form-keep"])
        for widget, field in ((self._workers, "workers"), (self._threads, "threads_per_worker"),
                              (self._memory, "memory_limit"), (self._gpus, "gpus_per_worker"),
                              (self._name, "run_name"), (self._keep, "keep_cluster")):
            widget.link(m, value=field)
        self._limits = pn.pane.Str(_limits_text(m.limits), css_classes=["gpulab-limits"])
        self._button = pn.widgets.Button(label="Launch", color="primary",
                                          css_classes=["gpulab-launch"])
        self._button.on_click(lambda _event: self.model.launch())
        # Str panes show text as text: nothing a user typed becomes markup.
        self._progress = pn.pane.Str("", css_classes=["gpulab-progress"])
        self._error = pn.pane.Alert("", alert_type="danger", visible=False,
                                    css_classes=["gpulab-launch-error"])
        self._link = pn.pane.HTML("", visible=False, css_classes=["gpulab-run-link-pane"])
        self._run_area = pn.Column(sizing_mode="stretch_width")
        self._run_view: Any = None
        self._shown: tuple[Any, ...] = ()
        self._build_hyperparameters()
        self.model.param.watch(lambda _e: self._build_hyperparameters(), "function")
        self._layout = pn.Column(
            pn.pane.Markdown("## gpulab launcher"),
            pn.Row(pn.Column(self._function, self._hyper, self._name),
                   pn.Column(self._workers, self._threads, self._memory, self._gpus,
                             self._keep, self._limits)),
            pn.Row(self._button, self._progress),
            self._error, self._link, self._run_area, sizing_mode="stretch_width")
        self.sync()

    def _build_hyperparameters(self) -> None:
        from gpulab.training import registry

        widgets = []
        if self.model.function:
            entry = registry.get(self.model.function)
            for key, declared in entry.params.items():
                widget = _widget_for(key, declared, self.model.hyperparameters.get(
                    key, declared.default))
                widget.css_classes = [f"gpulab-hp-{key}"]
                widget.param.watch(lambda e, key=key: self._set_hyper(key, e.new), "value")
                widgets.append(widget)
        self._hyper[:] = widgets

    def _set_hyper(self, key: str, value: Any) -> None:
        self.model.hyperparameters = {**self.model.hyperparameters, key: value}




    def tick(self) -> None:
        self.sync()

    def sync(self) -> None:
        """Show the model's state (on the page's own event loop: the launch runs in a
        thread, and Bokeh documents must change on their loop)."""
        m = self.model
        self._button.disabled = m.busy
        state = (m.phase, m.progress, m.error, m.field, m.run, m.dashboard_url)
        if state != self._shown:
            self._shown = state
            self._progress.object = m.progress or m.phase
            self._error.object = (f"{m.error} (field: {m.field})" if m.field else m.error)
            self._error.visible = bool(m.error)
            if m.dashboard_url:
                import html

                url = html.escape(m.dashboard_url, quote=True)
                self._link.object = (f'<a class="gpulab-run-link" href="{url}" target="_blank" '
                                     f'rel="noopener">Open the run\'s dashboard</a>')
            self._link.visible = bool(m.dashboard_url)
            if m.run is not None and (self._run_view is None
                                      or self._run_view.data.run.id != m.run.id):
                self._show_run(m.run)
        if self._run_view is not None and m.phase in ("training", "finished", "failed"):
            self._run_view.refresh()

    def _show_run(self, run: Any) -> None:
        from gpulab.dashboards.data import RunData
        from gpulab.dashboards.views import RunView

        if self._run_view is not None:
            self._run_view.stop()
        self._run_view = RunView(data=RunData(run))
        self._run_area[:] = [self._run_view]


def _limits_text(limits: dict[str, Any]) -> str:
    limit, in_use = limits.get("max_workers"), limits.get("workers_in_use")
    workers = "no Dask-worker limit known" if limit is None else (
        f"at most {limit} Dask workers at once" + ("" if in_use is None else f", {in_use} in use"))
    return f"Limits: {workers}; {limits.get('gpus', 0)} GPU(s) on this server"


def _widget_for(key: str, declared: Any, value: Any) -> Any:
    label = f"{key} ({declared.help})" if declared.help else key
    if declared.choices is not None:
        return pn.widgets.Select(label=label, options=list(declared.choices), value=value)
    kind = declared.kind
    if kind is bool:
        return pn.widgets.Checkbox(label=label, value=value)
    if kind in (int, float):
        low, high = declared.bounds or (None, None)
        cls = pn.widgets.IntInput if kind is int else pn.widgets.FloatInput
        return cls(label=label, value=value, start=low, end=high)
    return pn.widgets.TextInput(label=label, value=value)


def open_launcher(**params: Any) -> Launcher:
    """The launcher, inline in a notebook (the cell's last expression renders it)."""
    pn.extension()
    return Launcher(**params)


class _CallableModule(types.ModuleType):
    """``gpulab.dashboards.launcher()`` works once this module is imported too: importing
    a submodule replaces the package's attribute of that name with the module."""

    def __call__(self, **params: Any) -> Launcher:
        return open_launcher(**params)


sys.modules[__name__].__class__ = _CallableModule
