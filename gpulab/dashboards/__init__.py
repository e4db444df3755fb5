"""Live dashboards of training runs (Panel): ``show(run)`` in a notebook, served by Panel.

``RunData`` (``data``) is one run's data store, ``RunView`` (``views``) its dashboard;
``downsample`` keeps long series fast (LTTB, EMA smoothing). Importing this package loads
neither Panel's notebook extension nor a server: ``show`` and ``serve_run`` do, when called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LaunchModel", "Launcher", "RunData", "RunView", "launcher", "serve_run", "show"]

_COMPARE_AND_USAGE = {
    "CompareData": "gpulab.dashboards.compare", "CompareView": "gpulab.dashboards.compare",
    "UsageData": "gpulab.dashboards.usage", "UsageView": "gpulab.dashboards.usage",
}
__all__ += sorted(_COMPARE_AND_USAGE)



def __getattr__(name: str) -> Any:
    if name == "RunData":
        from gpulab.dashboards.data import RunData

        return RunData
    if name == "RunView":
        from gpulab.dashboards.views import RunView

        return RunView
    if name in ("launcher", "Launcher", "LaunchModel"):  # the launcher dashboard
        import importlib

        module = importlib.import_module("gpulab.dashboards.launcher")
        return module if name == "launcher" else getattr(module, name)
    if name in _COMPARE_AND_USAGE:  # several runs compared; the operators' usage view
        import importlib

        return getattr(importlib.import_module(_COMPARE_AND_USAGE[name]), name)
    raise AttributeError(name)


def show(run: Any, **params: Any) -> Any:
    """The live dashboard of ``run`` (a ``gpulab.runs.Run``): the last expression of a
    notebook cell renders it inline; it refreshes every second while displayed."""
    import panel as pn

    from gpulab.dashboards.data import RunData
    from gpulab.dashboards.views import RunView

    pn.extension()
    return RunView(data=RunData(run), **params)


def serve_run(run: Any, port: int = 0, *, address: str = "127.0.0.1", **kwargs: Any) -> Any:
    """Serve ``run``'s dashboard at ``http://address:port/`` from a thread; returns the
    server (``.stop()`` it). Each browser session gets its own view of the run's one
    shared ``RunData``. ``kwargs`` go to ``pn.serve``."""
    import panel as pn

    from gpulab.dashboards.data import RunData
    from gpulab.dashboards.views import RunView

    def app() -> Any:
        return RunView(data=RunData.shared(run))

    kwargs.setdefault("title", "gpulab run")
    server = pn.serve(app, port=port, address=address, threaded=True, show=False, **kwargs)
    if port:
        _wait_until_listening(address, port)
    return server


def _wait_until_listening(address: str, port: int, timeout: float = 30.0) -> None:
    """The threaded server binds a moment after ``pn.serve`` returns: wait for it, so a
    caller's first request isn't refused."""
    from gpulab.net import wait_for_port

    if not wait_for_port(address, port, timeout):
        raise TimeoutError(f"the dashboard server did not listen on {address}:{port} "
                           f"within {timeout} s")
