"""A run's live dashboard with a million points a metric: first render and update latency.

    .venv/bin/python -m bench.dashboard [--quick] [--points N] [--rounds R] [--writes W]

One run (a temporary ``RunStore``) gets ``N`` records with two metrics, ``loss`` and
``accuracy``, written with the store's own writer (``run.log``, then ``run.flush()``);
the same records by a writer saving no column files give ``write_without_column_files_s``
(what the column files cost the trainer, against ``write_s``).
Then, in one process:

- first render, timed from nothing (no reader, no view) to the JSON a server sends for a
  new session: build the view, attach it to a fresh ``bokeh.document.Document``
  (``pn.panel(view).get_root(doc)``) and serialise ``doc.to_json()`` the way Bokeh's
  protocol does (``serialize_json``). Rounds alternate which goes first:
  - ``gpulab``: ``RunView(data=RunData(run))`` (reads the run into columns: the column
    files its writer saved every 8 MiB, ``gpulab.runs.column_files``, and the JSON lines
    after the last one with Arrow's JSON reader; LTTB to at most 1,000 points a line,
    plus the steps/s plot and the summary table);
  - ``gpulab JSON only``: the same with the column files set aside (every line parsed,
    as for a run written before column files existed); reported, not in ``render_ratio``;
  - ``gpulab shared``: a new session of a run the server already shows: ``RunView`` over
    ``RunData.shared(run)``, which an earlier session read (what ``serve_run`` and the
    hub's dashboards service do); reported, not in ``render_ratio``;
  - ``naive``: ``run.read_metrics()`` (the same reader), numpy columns, and a Panel column
    of one Bokeh ``figure`` per metric with ``line`` over a ``ColumnDataSource`` of every
    point (numpy arrays: Bokeh sends them as binary buffers, its fastest path);
- update latency: ``gpulab.dashboards.serve_run(run, port)`` in a thread, the page open in
  Debian's Chromium (Playwright); then, ``W`` times, one ``run.log(step, ...)`` +
  ``run.flush()`` and the clock runs until the page's Bokeh document holds that step
  (polled every 10 ms in the page). "served: page load" is a new session's time until
  the page shows the last point.

Last line, ``key=value``: ``render_ratio`` = gpulab / naive median first-render seconds,
both cold (goal, issue #7: <= 0.25), ``shared_render_ratio`` the same for a new session
over shared data, ``update_latency_s`` = median write-to-document seconds
(goal <= 2), the raw seconds and the JSON sizes.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

METRICS = ("loss", "accuracy")


def _values(step: int) -> dict[str, float]:
    # A plausible training curve with noise: LTTB has something to keep.
    loss = 2.5 / (1 + step * 1e-4) + 0.05 * math.sin(step * 0.37)
    return {"loss": loss, "accuracy": 1 - loss / 3}


def _write(run: Any, points: int) -> float:
    t0 = time.perf_counter()
    for step in range(points):
        run.log(step, **_values(step))
    run.flush()
    return time.perf_counter() - t0


def _write_without_column_files(run: Any, points: int) -> float:
    """``_write`` by a writer that saves no column files: what they cost the trainer."""
    from gpulab.runs.metrics import MetricsWriter

    t0 = time.perf_counter()
    with MetricsWriter(run.folder.child("metrics"), column_span_bytes=None) as writer:
        for step in range(points):
            writer.log(step, **_values(step))
        writer.flush()
        return time.perf_counter() - t0


def _serialise(doc: Any) -> int:
    from bokeh.core.json_encoder import serialize_json

    # Buffers inline (base64), as one JSON text: what a new session's document costs.
    return len(serialize_json(doc.to_json(deferred=False)))


def _gpulab(run: Any) -> tuple[float, int]:
    import panel as pn
    from bokeh.document import Document

    from gpulab.dashboards import RunData, RunView

    t0 = time.perf_counter()
    view = RunView(data=RunData(run))
    doc = Document()
    doc.add_root(pn.panel(view).get_root(doc))
    size = _serialise(doc)
    return time.perf_counter() - t0, size


def _gpulab_json_only(run: Any) -> tuple[float, int]:
    """``_gpulab`` with the writer's column files set aside: every JSON line parsed."""
    from gpulab.runs import column_files

    metrics = run.folder.child("metrics")
    kept, aside = metrics.file(column_files.FOLDER), metrics.file("columns-aside")
    if not os.path.exists(kept):  # a run too short to have any
        return _gpulab(run)
    os.rename(kept, aside)
    try:
        return _gpulab(run)
    finally:
        os.rename(aside, kept)


def _gpulab_shared(run: Any) -> tuple[float, int]:
    import panel as pn
    from bokeh.document import Document

    from gpulab.dashboards import RunData, RunView

    data = _SHARED.setdefault(run.url, RunData.shared(run))
    data.refresh()  # an earlier session read the run; not timed
    t0 = time.perf_counter()
    view = RunView(data=RunData.shared(run))
    doc = Document()
    doc.add_root(pn.panel(view).get_root(doc))
    size = _serialise(doc)
    return time.perf_counter() - t0, size


_SHARED: dict[str, Any] = {}  # what the earlier sessions' views hold


def _naive(run: Any) -> tuple[float, int]:
    import numpy as np
    import panel as pn
    from bokeh.document import Document
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    t0 = time.perf_counter()
    records, _ = run.read_metrics()
    steps = np.array([r["step"] for r in records if r.get("rank", 0) == 0], dtype=float)
    panes = []
    for name in METRICS:
        values = np.array([r[name] for r in records if r.get("rank", 0) == 0], dtype=float)
        fig = figure(title=name, height=220, sizing_mode="stretch_width",
                     tools="pan,box_zoom,wheel_zoom,reset,save")
        fig.line("x", "y", source=ColumnDataSource({"x": steps, "y": values}), line_width=2)
        panes.append(pn.pane.Bokeh(fig, sizing_mode="stretch_width"))
    doc = Document()
    doc.add_root(pn.Column(*panes, sizing_mode="stretch_width").get_root(doc))
    size = _serialise(doc)
    return time.perf_counter() - t0, size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _source(doc: Any, title: str) -> Any:
    from bokeh.models import GlyphRenderer, Plot

    for plot in doc.select({"type": Plot}):
        if plot.title is not None and plot.title.text == title:
            for renderer in plot.select({"type": GlyphRenderer}):
                return renderer.data_source
    return None


def _server_last(step: int) -> Any:
    import panel as pn

    for callbacks in getattr(pn.state, "_periodic", {}).values():
        for cb in callbacks:
            view = getattr(cb.callback, "__self__", None)
            line = getattr(view, "_lines", {}).get("loss")
            if line is not None and len(line.source.data["x"]):
                return line.source.data["x"][-1]
    return None


# The largest step any line of the page's Bokeh document holds: what the browser has.
LAST_STEP_JS = """() => {
  const doc = window.Bokeh && window.Bokeh.documents[0];
  let last = -1;
  if (!doc) return last;
  for (const model of doc.all_models) {
    if (model.type === 'ColumnDataSource' && model.data.x && model.data.x.length) {
      last = Math.max(last, model.data.x[model.data.x.length - 1]);
    }
  }
  return last;
}"""


def _update_latency(run: Any, first_step: int, writes: int,
                    timeout: float = 10.0) -> tuple[list[float], float]:
    """Write-to-browser latency, in Debian's Chromium (Playwright) on the served view."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from gpulab.dashboards import serve_run
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

    port = _free_port()
    server = serve_run(run, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function(f"() => ({LAST_STEP_JS})() >= {first_step - 1}",
                                   timeout=300_000)
            load_s = time.perf_counter() - t0
            latencies: list[float] = []
            for i in range(writes):
                step = first_step + i
                started = time.perf_counter()
                run.log(step, **_values(step))
                run.flush()
                try:
                    page.wait_for_function(f"() => ({LAST_STEP_JS})() >= {step}",
                                           timeout=timeout * 1000, polling=10)
                except PlaywrightTimeout:
                    print(f"write {i + 1}/{writes}: step {step} not in the page after "
                          f"{timeout} s", file=sys.stderr)
                    latencies.append(math.inf)
                    break
                latencies.append(time.perf_counter() - started)
                print(f"write {i + 1}/{writes}: {latencies[-1]:.3f} s", file=sys.stderr)
                time.sleep(0.37 * (i % 3))  # spread the writes over the 1 s refresh period
            browser.close()
        return latencies, load_s
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="200,000 points, 3 rounds, 5 writes (about a minute)")
    parser.add_argument("--points", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--writes", type=int, default=None)
    args = parser.parse_args(argv)
    points = args.points or (200_000 if args.quick else 1_000_000)
    rounds = args.rounds or 3
    writes = args.writes or (5 if args.quick else 9)
    logging.getLogger("bokeh").setLevel(logging.ERROR)
    logging.getLogger("tornado").setLevel(logging.ERROR)
    run_t0 = time.perf_counter()

    import panel  # noqa: F401  (imports outside every timing)
    import pyarrow.compute  # noqa: F401  (the writers' and the reader's)
    import pyarrow.ipc  # noqa: F401
    import pyarrow.json  # noqa: F401

    from gpulab.runs import RunStore

    store = RunStore(tempfile.mkdtemp(prefix="gpulab-bench-dashboard-"))
    run = store.create("bench", "dashboard bench", config={"points": points})
    write_s = _write(run, points)
    print(f"wrote {points} records ({len(METRICS)} metrics) in {write_s:.1f} s",
          file=sys.stderr)

    plain = store.create("bench", "no column files")
    write_plain_s = _write_without_column_files(plain, points)

    kinds = {"naive": _naive, "gpulab": _gpulab, "gpulab JSON only": _gpulab_json_only,
             "gpulab shared": _gpulab_shared}
    # Warm-up on a small run: imports and first-use caches, for both, not measured.
    small = store.create("bench", "warm-up")
    _write(small, 1000)
    for fn in kinds.values():
        fn(small)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    sizes: dict[str, int] = {}
    for r in range(rounds):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            elapsed, sizes[kind] = kinds[kind](run)
            times[kind].append(elapsed)
            print(f"round {r + 1}/{rounds} {kind:<16} {elapsed:.3f} s, "
                  f"{sizes[kind] / 1e6:.2f} MB", file=sys.stderr)

    latencies, pull_s = _update_latency(run, points, writes)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{'what':<48}{'n':>4}{'median s':>10}{'min s':>8}{'max s':>8}{'JSON MB':>9}")
    for kind in kinds:
        v = times[kind]
        label = f"{kind} first render ({points} pts x {len(METRICS)})"
        print(f"{label:<48}{len(v):>4}{med[kind]:>10.3f}{min(v):>8.3f}{max(v):>8.3f}"
              f"{sizes[kind] / 1e6:>9.3f}")
    print(f"{'served: page load (new session)':<48}{1:>4}{pull_s:>10.3f}")
    lat = statistics.median(latencies)  # inf: a write never reached the served document
    print(f"{'update: write -> served document':<48}{len(latencies):>4}{lat:>10.3f}"
          f"{min(latencies):>8.3f}{max(latencies):>8.3f}")
    print(
        f"\nrender_ratio={med['gpulab'] / med['naive']:.3f} update_latency_s={lat:.3f} "
        f"shared_render_ratio={med['gpulab shared'] / med['naive']:.3f} "
        f"json_only_render_ratio={med['gpulab JSON only'] / med['naive']:.3f} "
        f"gpulab_render_s={med['gpulab']:.3f} naive_render_s={med['naive']:.3f} "
        f"gpulab_json_bytes={sizes['gpulab']} naive_json_bytes={sizes['naive']} "
        f"json_ratio={sizes['gpulab'] / sizes['naive']:.4f} "
        f"update_latency_max_s={max(latencies):.3f} updates_seen="
        f"{sum(math.isfinite(x) for x in latencies)}/{len(latencies)} page_load_s={pull_s:.3f} "
        f"write_s={write_s:.1f} write_without_column_files_s={write_plain_s:.1f} "
        f"points={points} metrics={len(METRICS)} rounds={rounds} "
        f"writes={writes} run_s={time.perf_counter() - run_t0:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
