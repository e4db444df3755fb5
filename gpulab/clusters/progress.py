"""Progress while a cluster starts: a live bar in a notebook, lines on stderr elsewhere."""

from __future__ import annotations

import html
import sys
import time


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class StartProgress:
    """Shows ``stage`` and workers ready / requested; updates at most every 0.1 s."""

    def __init__(self, name: str, requested: int):
        self.name = name
        self.requested = requested
        self.last: tuple[str, int] | None = None
        self.shown_at = 0.0
        self.handle = None
        if in_notebook():
            from IPython.display import display

            self.handle = display(self._bundle("admitted", 0), raw=True, display_id=True)

    def _bundle(self, stage: str, ready: int) -> dict[str, str]:
        pct = 100 * ready // max(self.requested, 1)
        text = f"cluster {self.name!r}: {stage}, {ready}/{self.requested} workers ready"
        # The name is the user's text: escaped before it goes into HTML.
        rendered = (
            f"<div><b>cluster {html.escape(self.name)}</b>: {html.escape(stage)} "
            f"<progress max='100' value='{pct}' style='width:12em'></progress> "
            f"{ready}/{self.requested} workers ready</div>"
        )
        return {"text/plain": text, "text/html": rendered}

    def update(self, stage: str, ready: int, force: bool = False) -> None:
        if (stage, ready) == self.last:
            return
        now = time.monotonic()
        if not force and now - self.shown_at < 0.1 and stage == (self.last or ("",))[0]:
            return
        self.last, self.shown_at = (stage, ready), now
        if self.handle is not None:
            self.handle.update(self._bundle(stage, ready), raw=True)
        else:
            print(self._bundle(stage, ready)["text/plain"], file=sys.stderr, flush=True)
