"""Compare runs: one metric overlaid across several runs, and a table of their configs and
final results.

``CompareData`` (a ``param.Parameterized``, no widgets) holds one ``RunData`` per run and
what is chosen: ``metric`` (from the union of the runs' metric names) and the LTTB
``threshold``; ``lines()`` gives each run's curve of that metric, downsampled on the
server, and ``table()`` one row per run (name, status, each config key, each metric's last
value). ``CompareView`` draws them: a Bokeh figure with one line per run, updated in place,
and an HTML table built with ``html.escape`` on every value (run names, config keys and
values, metric names are data).

Which runs a viewer may compare is the caller's business: the hub's service passes only
runs that ``RunStore.viewable`` let through.
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
from gpulab.dashboards.downsample import DEFAULT_THRESHOLD, lttb_indices
from gpulab.dashboards.live import LiveViewer
from gpulab.runs import Run

MAX_RUNS = 20


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class CompareData(param.Parameterized):
    """Several runs' data; ``CompareData(runs=[run, ...], metric="loss")``."""

    metric = param.String(default="", doc="The metric overlaid ('' : the first common one).")
    metrics = param.List(default=[], doc="Every metric any of the runs logged, sorted.")
    threshold = param.Integer(default=DEFAULT_THRESHOLD, bounds=(3, None),
                              doc="Most points drawn per run (LTTB beyond it).")
    version = param.Integer(default=0, doc="Goes up when any run's data changed.")

    def __init__(self, runs: list[Run], **params: Any):
        if len(runs) > MAX_RUNS:
            raise ValueError(f"runs: compare at most {MAX_RUNS} runs, not {len(runs)}")
        super().__init__(**params)
        self.data = [RunData(run) for run in runs]
        self.refresh()

    @param.depends("metric", watch=True)
    def _check_metric(self) -> None:
        if self.metric and self.metrics and self.metric not in self.metrics:
            raise ValueError(f"metric: none of the runs logged {self.metric!r}")

    def refresh(self) -> bool:
        """Tail every run; True if anything changed."""
        changed = False
        for data in self.data:
            changed = data.refresh() or changed
        names = sorted({name for data in self.data for name in data.metrics})
        update: dict[str, Any] = {}
        if names != self.metrics:
            update["metrics"] = names
        if not self.metric and names:
            common = [n for n in names if all(n in d.metrics for d in self.data)]
            update["metric"] = (common or names)[0]
        if changed:
            update["version"] = self.version + 1
        if update:
            self.param.update(**update)
        return changed

    def lines(self) -> list[tuple[RunData, np.ndarray, np.ndarray]]:
        """``(run data, steps, values)`` of ``metric`` per run that logged it, each at most
        ``threshold`` points (LTTB)."""
        found = []
        for data in self.data:
            if self.metric not in data.metrics:
                continue
            series = data.series(self.metric)
            keep = lttb_indices(series.steps, series.values, self.threshold)
            found.append((data, series.steps[keep], series.values[keep]))
        return found

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Column names and one row of text per run: the run, its status, each config key
        any run has, and the last value of each metric (unescaped: the view escapes)."""
        keys = sorted({key for data in self.data for key in data.config})
        header = ["run", "owner", "status", *(f"config: {k}" for k in keys),
                  *(f"last {m}" for m in self.metrics)]
        rows = []
        for data in self.data:
            row = [data.run_name or data.run.id, data.run.owner, data.status]
            row += [_shown(data.config[k]) if k in data.config else "" for k in keys]
            for name in self.metrics:
                if name in data.metrics and len(data.series(name)):
                    row.append(f"{float(data.series(name).values[-1]):.6g}")
                else:
                    row.append("")
            rows.append(row)
        return header, rows


class CompareView(LiveViewer):
    """The compare page: a metric chooser, the overlaid curves and the table."""

    data = param.ClassSelector(class_=CompareData, constant=True)
    period = param.Integer(default=2000, bounds=(100, None),
                           doc="Milliseconds between refreshes while displayed.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._chooser = pn.widgets.Select(label="Metric", options=self._options(),
                                          value=self.data.metric or None)
        self._chooser.param.watch(self._on_choose, "value")
        self._sources: dict[str, ColumnDataSource] = {}
        self._figure = figure(title="", height=360, sizing_mode="stretch_width",
                              tools="pan,box_zoom,wheel_zoom,reset,save")
        self._figure.xaxis.axis_label = "step"
        self._table = pn.pane.HTML("", sizing_mode="stretch_width")
        self._layout = pn.Column(
            pn.pane.HTML(f"<h3>Comparing {len(self.data.data)} runs</h3>"),
            self._chooser,
            pn.pane.Bokeh(self._figure, sizing_mode="stretch_width"),
            self._table,
            sizing_mode="stretch_width",
        )
        self._sync()

    def _options(self) -> dict[str, str]:
        return {html.escape(name): name for name in self.data.metrics}




    def refresh(self) -> None:
        if self.data.refresh():
            self._sync()

    def _on_choose(self, event: Any) -> None:
        if event.new and event.new != self.data.metric:
            self.data.metric = event.new
            self._sync()

    def _sync(self) -> None:
        self._chooser.options = self._options()
        if self.data.metric:
            self._chooser.value = self.data.metric
        self._figure.title.text = self.data.metric  # canvas text, never markup
        for i, (data, steps, values) in enumerate(self.data.lines()):
            key = f"{data.run.owner}/{data.run.id}"
            source = self._sources.get(key)
            if source is None:
                source = self._sources[key] = ColumnDataSource({"x": [], "y": []})
                label = f"{(data.run_name or data.run.id)[:40]} ({data.run.id[-6:]})"
                self._figure.line("x", "y", source=source, line_width=2,
                                  color=Category10_10[i % 10], legend_label=label)
            source.data = {"x": steps.tolist(), "y": values.tolist()}
        shown = {f"{d.run.owner}/{d.run.id}" for d, _, _ in self.data.lines()}
        for key, source in self._sources.items():
            if key not in shown:
                source.data = {"x": [], "y": []}
        header, rows = self.data.table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in rows)
        self._table.object = (f"<table class='gpulab-compare'><tr>{head}</tr>{body}</table>")
