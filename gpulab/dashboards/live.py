"""``LiveViewer``: a Panel ``Viewer`` that refreshes itself while a browser shows it.

Every live view (a run, a comparison, the usage view, the launcher) does the same: when a
session loads the page, call ``tick()`` (``refresh()`` unless a subclass says otherwise)
every ``period`` milliseconds; when the session ends, stop. In a notebook's inline output
Panel runs the same callbacks in the kernel. Subclasses set ``period``'s default and build
``self._layout``.
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
from panel.viewable import Viewer


class LiveViewer(Viewer):
    period = param.Integer(default=1000, bounds=(100, None),
                           doc="Milliseconds between refreshes while displayed.")

    _layout: Any
    _callback: Any = None

    def tick(self) -> None:
        """What runs every ``period`` ms while shown."""
        self.refresh()

    def refresh(self) -> None:
        raise NotImplementedError

    def __panel__(self) -> pn.viewable.Viewable:
        pn.state.onload(self._start)
        return self._layout

    def _start(self) -> None:
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.tick, period=self.period)
            pn.state.on_session_destroyed(lambda context: self.stop())

    def stop(self) -> None:
        """Stop refreshing (the session ended, or access was withdrawn)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
