"""The operator's usage view: GPU-hours and energy by user and by group over time, and the
allocations open now, from the quota ledger.

``UsageData`` (a ``param.Parameterized``, no widgets) reads the ledger given to it
(``gpulab.quota.ledger.Ledger``) and a ``groups()`` callable (user -> their groups: the
hub's service asks the hub; a notebook may pass a dict's ``get``), so this module never
imports the hub. ``refresh()`` spreads each allocation's GPU-seconds and energy evenly over
the time it ran and sums them into buckets (an hour for windows up to two days, a day
beyond) per user and per group (a user counts in each of their groups, so group totals may
overlap, as in ``gpulab.quota.reports.usage_report``). Open allocations count up to now.

``UsageView`` draws it: stacked-free line plots (one line per user or group), the totals
table and the open allocations, every user and group name escaped.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from gpulab.dashboards.live import LiveViewer

HOUR = 3600.0
DAY = 24 * HOUR
NO_GROUP = "(no group)"
MAX_WINDOW = 366 * DAY


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class UsageData(param.Parameterized):
    """Usage from ``ledger`` over the last ``window_seconds``."""

    window_seconds = param.Number(default=7 * DAY, bounds=(HOUR, MAX_WINDOW),
                                  doc="How far back to look.")
    bucket_seconds = param.Number(default=0.0, doc="The width of a bucket (set by refresh).")
    edges = param.Array(default=np.empty(0), doc="Bucket starts, epoch seconds.")
    by_user = param.Dict(default={}, doc="user -> GPU-hours per bucket (numpy array).")
    energy_by_user = param.Dict(default={}, doc="user -> Wh per bucket.")
    by_group = param.Dict(default={}, doc="group -> GPU-hours per bucket.")
    energy_by_group = param.Dict(default={}, doc="group -> Wh per bucket.")
    totals = param.Dict(default={}, doc="user -> {gpu_hours, energy_wh, groups}.")
    current = param.List(default=[], doc="Open allocations: dicts of user, server, gpus...")
    version = param.Integer(default=0)

    def __init__(self, ledger: Any, groups: Callable[[str], Iterable[str]] | None = None,
                 **params: Any):
        super().__init__(**params)
        self.ledger = ledger
        self.groups = groups or (lambda user: ())

    @classmethod
    def with_groups(cls, ledger: Any, groups: Mapping[str, Iterable[str]],
                    **params: Any) -> UsageData:
        return cls(ledger, lambda user: groups.get(user, ()), **params)

    def refresh(self) -> None:
        now = _aware(self.ledger.db_now())
        window = float(self.window_seconds)
        bucket = HOUR if window <= 2 * DAY else DAY
        end = now.timestamp()
        first = (end - window) // bucket * bucket
        edges = np.arange(first, end, bucket)
        by_user: dict[str, np.ndarray] = {}
        energy: dict[str, np.ndarray] = {}
        current = []
        for allocation in self.ledger.allocations_since(window):
            start = _aware(allocation.granted_at).timestamp()
            accrued = _aware(allocation.last_accrued_at)
            if allocation.ended_at is None:
                stop = max(now, accrued)
                gpu_seconds = (allocation.gpu_seconds
                               + allocation.gpus * (stop - accrued).total_seconds())
                current.append({
                    "user": allocation.user, "server": allocation.server,
                    "gpus": allocation.gpus, "devices": list(allocation.device_uuids),
                    "since": _aware(allocation.granted_at).isoformat(timespec="seconds"),
                })
                stop_s = stop.timestamp()
            else:
                gpu_seconds = allocation.gpu_seconds
                stop_s = _aware(allocation.ended_at).timestamp()
            shares = _spread(start, stop_s, edges, bucket)
            user = allocation.user
            by_user.setdefault(user, np.zeros(len(edges)))
            energy.setdefault(user, np.zeros(len(edges)))
            by_user[user] += shares * gpu_seconds / HOUR
            energy[user] += shares * allocation.energy_joules / HOUR  # J -> Wh
        by_group: dict[str, np.ndarray] = {}
        energy_by_group: dict[str, np.ndarray] = {}
        totals = {}
        for user in sorted(by_user):
            groups = sorted(set(self.groups(user) or ())) or [NO_GROUP]
            totals[user] = {"gpu_hours": float(by_user[user].sum()),
                            "energy_wh": float(energy[user].sum()), "groups": groups}
            for group in groups:
                by_group.setdefault(group, np.zeros(len(edges)))
                energy_by_group.setdefault(group, np.zeros(len(edges)))
                by_group[group] += by_user[user]
                energy_by_group[group] += energy[user]
        self.param.update(
            bucket_seconds=bucket, edges=edges, by_user=by_user, energy_by_user=energy,
            by_group=by_group, energy_by_group=energy_by_group, totals=totals,
            current=sorted(current, key=lambda a: (a["user"], a["server"])),
            version=self.version + 1,
        )


def _spread(start: float, stop: float, edges: np.ndarray, bucket: float) -> np.ndarray:
    """The fraction of ``[start, stop]`` inside each bucket (the whole of it in the bucket
    holding ``start`` when the span is empty); parts before the first bucket are dropped,
    as the window's start cuts them off."""
    if not len(edges):
        return np.zeros(0)
    span = stop - start
    if span <= 0:
        shares = np.zeros(len(edges))
        index = int((start - edges[0]) // bucket)
        if 0 <= index < len(edges):
            shares[index] = 1.0
        return shares
    lo = np.maximum(edges, start)
    hi = np.minimum(edges + bucket, stop)
    return np.clip(hi - lo, 0, None) / span


class UsageView(LiveViewer):
    """The usage page: a window chooser, GPU-hours and energy over time by user and by
    group, the totals and the open allocations."""

    data = param.ClassSelector(class_=UsageData, constant=True)
    period = param.Integer(default=30_000, bounds=(1000, None),
                           doc="Milliseconds between refreshes while displayed.")

    WINDOWS = {"1 day": DAY, "7 days": 7 * DAY, "30 days": 30 * DAY, "90 days": 90 * DAY}

    def __init__(self, **params: Any):
        super().__init__(**params)
        chosen = min(self.WINDOWS, key=lambda k: abs(self.WINDOWS[k] - self.data.window_seconds))
        self._window = pn.widgets.RadioButtonGroup(label="Window", options=list(self.WINDOWS),
                                                   value=chosen)
        self._window.param.watch(self._on_window, "value")
        self._plots = pn.Column(sizing_mode="stretch_width")
        self._tables = pn.pane.HTML("", sizing_mode="stretch_width")
        self._layout = pn.Column(pn.pane.HTML("<h3>GPU usage</h3>"), self._window,
                                 self._plots, self._tables, sizing_mode="stretch_width")
        self.refresh()




    def _on_window(self, event: Any) -> None:
        self.data.window_seconds = self.WINDOWS[event.new]
        self.refresh()

    def refresh(self) -> None:
        self.data.refresh()
        data = self.data
        x = ((data.edges + data.bucket_seconds / 2) * 1000.0).tolist()
        plots = []
        for title, series in (("GPU-hours by user", data.by_user),
                              ("Energy (Wh) by user", data.energy_by_user),
                              ("GPU-hours by group", data.by_group),
                              ("Energy (Wh) by group", data.energy_by_group)):
            if not series:
                continue  # nobody used a GPU in the window: the table says so
            fig = figure(title=title, height=220, sizing_mode="stretch_width",
                         x_axis_type="datetime", tools="pan,box_zoom,wheel_zoom,reset,save")
            for i, (name, values) in enumerate(sorted(series.items())):
                source = ColumnDataSource({"x": x, "y": values.tolist()})
                fig.line("x", "y", source=source, line_width=2, color=Category10_10[i % 10],
                         legend_label=name[:40])  # canvas text, never markup
            plots.append(pn.pane.Bokeh(fig, sizing_mode="stretch_width"))
        self._plots.objects = plots
        self._tables.object = self._tables_html()

    def _tables_html(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(user)}</td><td>{e(', '.join(t['groups']))}</td>"
            f"<td>{t['gpu_hours']:.3f}</td><td>{t['energy_wh']:.1f}</td></tr>"
            for user, t in self.data.totals.items()
        ) or "<tr><td colspan='4'>no GPU use in this window</td></tr>"
        current = "".join(
            f"<tr><td>{e(a['user'])}</td><td>{e(a['server'] or 'default')}</td>"
            f"<td>{a['gpus']}</td><td>{e(', '.join(a['devices']))}</td><td>{e(a['since'])}</td>"
            "</tr>"
            for a in self.data.current
        ) or "<tr><td colspan='5'>none</td></tr>"
        return (
            "<h4>Totals in the window</h4><table class='gpulab-usage'>"
            "<tr><th>user</th><th>groups</th><th>GPU-hours</th><th>energy (Wh)</th></tr>"
            f"{rows}</table><h4>Allocations open now</h4><table class='gpulab-allocations'>"
            "<tr><th>user</th><th>server</th><th>GPUs</th><th>devices</th><th>since</th></tr>"
            f"{current}</table>"
        )
