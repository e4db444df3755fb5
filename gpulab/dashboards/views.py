"""``RunView``: one run's live dashboard, a Panel ``Viewer`` over a ``RunData``.

Metric curves (choose metrics, smoothing, log scale), steps/s and samples/s, per-device GPU
utilisation, memory, power and energy, and a table of the status, restarts, checkpoints and
config. Curves are Bokeh figures whose ``ColumnDataSource`` is updated in place: a series
still under ``threshold`` points gets only its new points (``stream``), a longer one its
new LTTB downsample (at most ``threshold`` points); an unchanged one nothing.

Everything from the run (its name, metric names, config keys and values) is data: the
table is HTML built with ``html.escape`` on every value, the metric chooser's labels are
escaped (its widget renders labels as HTML), and plot titles are canvas text.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from gpulab.dashboards.data import RunData
from gpulab.dashboards.downsample import DEFAULT_THRESHOLD, lttb_indices, smooth
from gpulab.dashboards.live import LiveViewer

GPU_PLOTS = (
    ("gpu_utilization_pct", "GPU utilisation (%)"),
    ("gpu_memory_used_bytes", "GPU memory used (bytes)"),
    ("gpu_power_w", "GPU power (W)"),
    ("energy_total", "GPU energy (Wh)"),
)


# Logged to compute a rate (samples/s has its own plot), not worth a plot by default;
# the chooser still offers them.
COUNTERS = frozenset({"samples"})


def _label(name: str) -> str:
    return html.escape(name, quote=True)


class _Line:
    """One line's source, fed from full arrays; remembers what it sent."""

    def __init__(self, threshold: int):
        self.source = ColumnDataSource({"x": [], "y": []})
        self.threshold = threshold
        self.key: Any = None  # the series' generation (None: redraw all)
        self.seen = 0  # points of the series drawn so far
        self.streaming = False  # all of them sent as they are (not downsampled)

    def update(self, key: Any, x: np.ndarray, y: np.ndarray, alpha: float) -> None:
        n = len(x)
        if key == self.key and n == self.seen:
            return  # nothing new
        y = smooth(y, alpha) if alpha else y
        if key == self.key and self.streaming and n <= self.threshold:
            new = slice(self.seen, n)
            finite = np.isfinite(x[new]) & np.isfinite(y[new])
            self.source.stream({"x": x[new][finite].tolist(), "y": y[new][finite].tolist()})
        else:
            keep = lttb_indices(x, y, self.threshold)
            self.source.data = {"x": x[keep].tolist(), "y": y[keep].tolist()}
            self.streaming = n <= self.threshold
        self.key, self.seen = key, n


class RunView(LiveViewer):
    """One run, live. ``RunView(data=RunData(run))``; ``refresh()`` reads and redraws."""

    data = param.ClassSelector(class_=RunData, constant=True)
    selected = param.List(default=[], doc="The metrics plotted (all but counters such as "
                          "samples, until chosen).")
    smoothing = param.Number(default=0.0, bounds=(0, 0.99), doc="EMA weight, 0: none.")
    log_scale = param.Boolean(default=False)
    threshold = param.Integer(default=DEFAULT_THRESHOLD, bounds=(3, None),
                              doc="Most points drawn per line (LTTB beyond it).")
    period = param.Integer(default=1000, bounds=(100, None),
                           doc="Milliseconds between refreshes while displayed.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._chosen = False
        self._chooser = pn.widgets.MultiChoice(label="Metrics", options={}, value=[])
        self._slider = pn.widgets.FloatSlider(label="Smoothing", start=0, end=0.99, step=0.01,
                                              value=self.smoothing)
        self._log = pn.widgets.Checkbox(label="Log scale", value=self.log_scale)
        self._summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self._plots = pn.Column(sizing_mode="stretch_width")
        self._gpu_plots = pn.Column(sizing_mode="stretch_width")
        self._lines: dict[str, _Line] = {}
        self._rate_lines: dict[str, _Line] = {}
        self._gpu_figures: dict[str, Any] = {}
        self._gpu_lines: dict[tuple[str, str], _Line] = {}
        self._synced = -1  # the data's version last drawn (the data may be shared)
        self._chooser.param.watch(self._on_choose, "value")
        self._slider.link(self, value="smoothing")
        self._log.link(self, value="log_scale")
        self._layout = pn.Column(
            self._summary,
            pn.Row(self._chooser, self._slider, self._log),
            self._plots,
            self._gpu_plots,
            sizing_mode="stretch_width",
        )
        self.data.refresh()
        self._sync()

    # -- Panel ----------------------------------------------------------------------------




    def refresh(self) -> None:
        """Tail the run; redraw what changed (since this view last drew: another view
        sharing the data may have read the new records)."""
        self.data.refresh()
        if self.data.version != self._synced:
            self._sync()

    # -- drawing --------------------------------------------------------------------------

    def _on_choose(self, event: Any) -> None:
        self._chosen = True
        self.selected = list(event.new)

    @param.depends("selected", "log_scale", watch=True)
    def _rebuild_plots(self) -> None:
        self._lines = {}
        self._rate_lines = {}
        self._gpu_figures = {}
        self._gpu_lines = {}
        self._plots.objects = []
        self._gpu_plots.objects = []
        self._sync()

    @param.depends("smoothing", "threshold", watch=True)
    def _redraw(self) -> None:
        for line in [*self._lines.values(), *self._rate_lines.values(),
                     *self._gpu_lines.values()]:
            line.key = None
        self._sync()

    def _figure(self, title: str, *, datetime: bool = False, log: bool = False) -> Any:
        return figure(title=title, height=220, sizing_mode="stretch_width",
                      y_axis_type="log" if log else "linear",
                      x_axis_type="datetime" if datetime else "linear",
                      tools="pan,box_zoom,wheel_zoom,reset,save")

    def _sync(self) -> None:
        data = self.data
        self._synced = data.version
        names = list(data.metrics)
        self._chooser.options = {_label(n): n for n in names}
        shown = [n for n in names if n not in COUNTERS] or names
        if not self._chosen and self.selected != shown:
            self.selected = shown  # all, until the user chooses: rebuilds, then syncs
            return
        self._chooser.value = [n for n in self.selected if n in names]
        alpha = self.smoothing
        for name in self.selected:
            if name not in names:
                continue
            line = self._lines.get(name)
            if line is None:
                line = self._lines[name] = _Line(self.threshold)
                fig = self._figure(name, log=self.log_scale)
                fig.xaxis.axis_label = "step"
                fig.line("x", "y", source=line.source, line_width=2)
                self._plots.append(pn.pane.Bokeh(fig, sizing_mode="stretch_width"))
            series = data.series(name)
            line.update(data.generation(name), series.steps, series.values, alpha)
        self._sync_rates(alpha)
        self._sync_gpus()
        self._summary.object = self._summary_html()

    def _sync_rates(self, alpha: float) -> None:
        rates = self.data.rates()
        if not len(rates["step"]):
            return
        if not self._rate_lines:
            fig = self._figure("steps/s and samples/s")
            fig.xaxis.axis_label = "step"
            for i, key in enumerate(("steps_per_s", "samples_per_s")):
                line = self._rate_lines[key] = _Line(self.threshold)
                fig.line("x", "y", source=line.source, color=Category10_10[i],
                         legend_label=key.replace("_per_", "/"), line_width=2)
            self._plots.append(pn.pane.Bokeh(fig, sizing_mode="stretch_width"))
        generation = self.data.generation_of_rates()
        for key, line in self._rate_lines.items():
            line.update(generation, rates["step"], rates[key], alpha)

    def _sync_gpus(self) -> None:
        for i, uuid in enumerate(self.data.devices):
            series = self.data.gpu(uuid)
            times = series["time"] * 1000.0
            for field, title in GPU_PLOTS:
                fig = self._gpu_figures.get(field)
                if fig is None:
                    fig = self._gpu_figures[field] = self._figure(title, datetime=True)
                    self._gpu_plots.append(pn.pane.Bokeh(fig, sizing_mode="stretch_width"))
                line = self._gpu_lines.get((uuid, field))
                if line is None:
                    line = self._gpu_lines[(uuid, field)] = _Line(self.threshold)
                    fig.line("x", "y", source=line.source, line_width=2,
                             color=Category10_10[i % 10], legend_label=uuid[-12:])
                line.update(0, times, series[field], 0.0)

    def _summary_html(self) -> str:
        data = self.data
        rows = [
            ("run", data.run_name),
            ("id", f"{data.run.owner}/{data.run.id}"),
            ("status", data.status),
            ("restarts", "; ".join(
                f"{r.get('at')}: {r.get('reason')} (from step {r.get('from_checkpoint_step')})"
                for r in data.restarts) or "none"),
            ("checkpoints", ", ".join(str(s) for s in data.checkpoints) or "none"),
            ("metrics", ", ".join(data.metrics) or "none yet"),
            ("GPUs", ", ".join(data.devices) or "none reporting"),
            ("energy", f"{data.energy_wh:.3f} Wh"),
            ("GPU-hours", f"{data.gpu_hours:.4f}"),
        ]
        rates = data.rates()
        if len(rates["step"]):
            recent = rates["steps_per_s"][-20:]
            rows.append(("steps/s", f"{float(np.mean(recent)):.3g}"))
            samples = rates["samples_per_s"][-20:]
            samples = samples[np.isfinite(samples)]
            if len(samples):
                rows.append(("samples/s", f"{float(np.mean(samples)):.4g}"))
        rows += [(f"config: {key}", json.dumps(value, default=str))
                 for key, value in sorted(data.config.items())]
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return (f"<h3>{html.escape(data.run_name or data.run.id)}</h3>"
                f"<table class='gpulab-run'>{body}</table>")
