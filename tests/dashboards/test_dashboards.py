"""gpulab.dashboards: the data store tailing a run, LTTB and smoothing, a served view."""

import html
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from bokeh.models import ColumnDataSource

from gpulab.dashboards import serve_run
from gpulab.dashboards.data import RunData
from gpulab.dashboards.downsample import lttb, smooth
from gpulab.dashboards.views import RunView
from gpulab.runs import RunStore

EVIL_NAME = "<img src=x onerror=alert(1)>"
EVIL_METRIC = "<b>m</b>"


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def test_tails_a_run_while_it_is_written(store):
    run = store.create("alice", "tail", world_size=2)
    data = RunData(run)
    total = 400

    def write():
        for step in range(total):
            run.log(step, loss=1.0 / (step + 1), samples=8)
            run.log(step, rank=1, loss=99.0)
            if step % 50 == 0:
                run.log(step, gpu_uuid="GPU-a", gpu_utilization_pct=50.0,
                        gpu_memory_used_bytes=1e9, gpu_power_w=100.0, gpu_energy_wh=step / 100)
                run.log(step, rank=1, gpu_uuid="GPU-b", gpu_utilization_pct=70.0,
                        gpu_memory_used_bytes=2e9, gpu_power_w=200.0, gpu_energy_wh=step / 50)
        run.flush()

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        data.refresh()
    writer.join()
    data.refresh()
    loss = data.series("loss")
    assert loss.steps.tolist() == list(range(total))  # each once, rank 0 only
    assert np.allclose(loss.values, 1.0 / (np.arange(total) + 1))
    assert data.metrics == ["loss", "samples"]
    assert data.devices == ["GPU-a", "GPU-b"]
    assert data.gpu("GPU-b")["gpu_power_w"].tolist() == [200.0] * 8
    assert data.energy_wh == pytest.approx(3.5 + 7.0)
    assert data.records_read == 2 * total + 16
    rates = data.rates()
    assert len(rates["steps_per_s"]) and (rates["steps_per_s"] > 0).all()
    version = data.version
    assert not data.refresh() and data.version == version


def test_restarts_supersede_replayed_steps(store):
    run = store.create("alice", "restarts")
    data = RunData(run)
    for step in range(10):
        run.log(step, loss=float(step))
    data.refresh()
    assert data.series("loss").steps.tolist() == list(range(10))
    generation = data.generation("loss")
    run.record_restart("worker lost", from_step=5)
    for step in range(6, 12):
        run.log(step, loss=100.0 + step)
    data.refresh()
    loss = data.series("loss")
    assert loss.steps.tolist() == list(range(12))
    assert loss.values[6:].tolist() == [100.0 + s for s in range(6, 12)]
    assert data.generation("loss") != generation
    assert len(data.restarts) == 1


def test_lttb_small_inputs_unchanged():
    x, y = np.arange(5.0), np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    sx, sy = lttb(x, y, 5)
    assert sx.tolist() == x.tolist() and sy.tolist() == y.tolist()
    sx, sy = lttb(x, y, 3)
    assert len(sx) == 3 and sx[0] == 0 and sx[-1] == 4


def test_lttb_keeps_spikes_and_ends():
    x = np.arange(10_000.0)
    y = np.zeros_like(x)
    y[4321], y[7777] = 50.0, -30.0
    sx, sy = lttb(x, y, 100)
    assert len(sx) <= 100 and sx[0] == 0 and sx[-1] == x[-1]
    assert 50.0 in sy and -30.0 in sy


def test_lttb_a_million_points_keeps_a_thousand_in_order():
    # How fast is bench.dashboard's business; this checks the result at that size.
    rng = np.random.default_rng(0)
    x, y = np.arange(1_000_000.0), rng.random(1_000_000)
    y[123_456] = 5.0  # a spike LTTB must keep
    sx, sy = lttb(x, y, 1000)
    assert len(sx) == 1000 and np.all(np.diff(sx) > 0)
    assert sx[0] == 0 and sx[-1] == 999_999 and 123_456 in sx
    assert np.array_equal(sy, y[sx.astype(int)])


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 0.999])
def test_smooth_is_an_ema(alpha):
    values = np.random.default_rng(1).random(3000)
    values[10] = np.nan
    expected, previous = [], None
    for v in values:
        if np.isnan(v):
            expected.append(v)
            continue
        previous = v if previous is None else alpha * previous + (1 - alpha) * v
        expected.append(previous)
    assert np.allclose(smooth(values, alpha), expected, equal_nan=True)


def test_view_streams_only_new_points(store, monkeypatch):
    run = store.create("alice", "view")
    for step in range(5):
        run.log(step, loss=float(step))
    view = RunView(data=RunData(run), threshold=50)
    line = view._lines["loss"]
    sent = []
    stream = ColumnDataSource.stream
    monkeypatch.setattr(ColumnDataSource, "stream",
                        lambda self, new, **kw: (sent.append(new["x"]), stream(self, new, **kw)))
    for step in range(5, 8):
        run.log(step, loss=float(step))
    view.refresh()
    assert line.source.data["x"] == list(range(8)) # streamed
    assert [5.0, 6.0, 7.0] in sent and all(len(new) <= 3 for new in sent)  # only the new
    for step in range(8, 200):
        run.log(step, loss=float(step))
    view.refresh()
    assert len(line.source.data["x"]) == 50  # downsampled, sent whole


def test_counters_are_offered_but_not_plotted_until_chosen(store):
    run = store.create("alice", "counters")
    run.log(0, loss=1.0, samples=64)
    view = RunView(data=RunData(run))
    assert view.selected == ["loss"] and set(view._lines) == {"loss"}
    assert set(view._chooser.options.values()) == {"loss", "samples"}
    view._chooser.value = ["loss", "samples"]  # the user picks it
    assert set(view._lines) == {"loss", "samples"}


def test_views_sharing_one_run_data_all_draw_what_one_of_them_read(store):
    run = store.create("alice", "shared")
    run.log(0, loss=1.0)
    data = RunData.shared(run)
    assert RunData.shared(store.open("alice", run.id)) is data  # one per run, by its URL
    first, second = RunView(data=data), RunView(data=data)
    run.log(1, loss=0.5)
    first.refresh()  # reads the new record: the data has nothing new for the second
    assert data.refresh() is False
    second.refresh()
    assert second._lines["loss"].source.data["x"] == [0, 1]
    assert first._lines["loss"].source.data["x"] == [0, 1]
    other = store.create("alice", "other")
    assert RunData.shared(other) is not data


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# Models whose text the browser renders as HTML (Panel's HTML pane sends its markup escaped
# once more, and the browser undoes that) and the MultiChoice's labels (HTML by default).
# Canvas text (a plot's Title) is drawn as text and may hold anything.
HTML_RENDERED = {"HTML", "Div", "Markup"}


def _rendered_html(url: str) -> list[str]:
    """What the browser renders as HTML in the document a session gets (the document
    travels over Bokeh's websocket, not in the page)."""
    from bokeh.client import pull_session

    with pull_session(url=url) as session:
        found = []
        for model in session.document.models:
            kind = type(model).__name__
            for prop, value in model.properties_with_values(include_defaults=False).items():
                if kind in HTML_RENDERED and prop == "text":
                    found.extend(html.unescape(text) for text in _strings(value))
                elif kind == "MultiChoice" and prop == "options":
                    found.extend(_strings(value))
        return found


def test_served_view_escapes_run_data(store):
    run = store.create("alice", EVIL_NAME, config={"<i>k</i>": "<img src=x>"})
    run.log(1, **{EVIL_METRIC: 1.0})
    run.flush()
    port = _free_port()
    server = serve_run(run, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        page = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    assert r.status == 200
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert page is not None
        rendered = _rendered_html(url)
    finally:
        server.stop()
    assert "<img src=x" not in page
    # The run's name and the metric's are shown, escaped by gpulab; never as markup.
    assert any(html.escape(EVIL_NAME) in s for s in rendered), rendered[:20]
    assert any(html.escape(EVIL_METRIC) in s for s in rendered)
    assert not any("<img src=x" in s or EVIL_METRIC in s for s in rendered)
