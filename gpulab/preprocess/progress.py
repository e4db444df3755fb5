"""One ``compute`` for the package: every collection in one graph, with progress shown.

Long computations show how far they are: a bar in a notebook (updated in place, as
``gpulab.clusters`` shows a cluster starting), a line on stderr every few seconds elsewhere
once the work has taken more than a second. With a ``distributed`` client current the work
runs on its cluster and the bar follows the scheduler; else Dask's local scheduler runs it.
"""

from __future__ import annotations

import html
import io
import sys
import time
from typing import Any

from gpulab.clusters.progress import in_notebook

QUIET_FOR_S = 1.0  # outside a notebook, say nothing about work shorter than this
TEXT_EVERY_S = 5.0


class Bar:
    """Renders ``fraction done`` for one labelled computation."""

    def __init__(self, label: str, show: bool | None):
        self.label = label
        self.started = time.monotonic()
        self.notebook = in_notebook()
        self.text = not self.notebook
        # Asked for (True): shown from the start; by default, only work that lasts.
        self.quiet_for = 0.0 if show is True else QUIET_FOR_S
        self.handle = None
        self.printed_at = 0.0
        self.last = -1

    def _bundle(self, fraction: float, state: str) -> dict[str, str]:
        pct = int(100 * fraction)
        elapsed = time.monotonic() - self.started
        text = f"{self.label}: {state} {pct}% ({elapsed:.1f} s)"
        rendered = (f"<div><b>{html.escape(self.label)}</b>: {html.escape(state)} "
                    f"<progress max='100' value='{pct}' style='width:12em'></progress> "
                    f"{pct}% ({elapsed:.1f} s)</div>")
        return {"text/plain": text, "text/html": rendered}

    def update(self, fraction: float, state: str = "computing") -> None:
        pct = int(100 * fraction)
        final = state != "computing"
        if self.notebook:
            if pct == self.last and not final:
                return
            self.last = pct
            bundle = self._bundle(fraction, state)
            if self.handle is None:
                from IPython.display import display

                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        elif self.text:
            now = time.monotonic()
            if now - self.started < self.quiet_for:
                return
            if final or now - self.printed_at >= TEXT_EVERY_S:
                self.printed_at = now
                print(self._bundle(fraction, state)["text/plain"], file=sys.stderr, flush=True)


def _current_client() -> Any:
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:  # no client in this process
        return None


def compute(*collections: Any, label: str = "computing", progress: bool | None = None):
    """``dask.compute(*collections)`` in one graph (shared inputs are read once), with
    progress: ``None`` shows a bar in a notebook and text on stderr for work longer than
    a second elsewhere, ``False`` nothing, ``True`` always."""
    import dask

    bar = Bar(label, progress) if progress is not False else None
    client = _current_client()
    if client is not None and not client.asynchronous:
        futures = client.compute(list(collections))
        if bar is not None:
            _follow_distributed(futures, bar)
        results = client.gather(futures)
        if bar is not None:
            bar.update(1.0, "done")
        return tuple(results)
    if bar is None:
        return dask.compute(*collections)
    from dask.diagnostics import ProgressBar

    class _LocalBar(ProgressBar):
        def _draw_bar(self, frac: float, elapsed: float) -> None:
            bar.update(frac)

        def _finish(self, dsk, state, errored):
            super()._finish(dsk, state, errored)
            bar.update(1.0, "failed" if errored else "done")

    with _LocalBar(out=io.StringIO(), dt=0.2):  # drawn by update(), not as text
        return dask.compute(*collections)


def _follow_distributed(futures: list[Any], bar: Bar) -> None:
    """Block until the futures finish, drawing the scheduler's count of tasks left."""
    from distributed.diagnostics.progressbar import TextProgressBar

    class _SchedulerBar(TextProgressBar):
        def _draw_bar(self, remaining: int = 0, all: int = 0, **kwargs: Any) -> None:  # noqa: A002
            bar.update((all - remaining) / all if all else 1.0)

        def _draw_stop(self, **kwargs: Any) -> None:
            if kwargs.get("status") == "error":
                bar.update(bar.last / 100 if bar.last > 0 else 0.0, "failed")

    _SchedulerBar(futures, interval="200ms")
