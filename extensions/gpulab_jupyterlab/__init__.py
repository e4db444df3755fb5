"""gpulab_jupyterlab: the Jupyter server extension and JupyterLab 4 sidebar of gpulab.

The server extension adds the REST API under ``/gpulab/`` (``handlers``; described in
``openapi.yaml``); the sidebar (TypeScript, in ``js/``) is built into ``labextension/``
and shipped prebuilt. Clusters the server started from the sidebar stop with the server.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "gpulab_jupyterlab"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "gpulab-jupyterlab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from gpulab_jupyterlab.handlers import handlers

    web_app = serverapp.web_app
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    from gpulab_jupyterlab.runs_handlers import handlers as runs_handlers  # the runs list

    web_app.add_handlers(".*$", runs_handlers(web_app.settings["base_url"]))
    serverapp.log.info("gpulab: REST API under %sgpulab/", web_app.settings["base_url"])


def _unload_jupyter_server_extension(serverapp: Any) -> None:
    # The sidebar's clusters run in this process: they end with it, and their GPUs and
    # workers go back to the user's allowance in the ledger.
    from gpulab.clusters import close_owned

    stopped = close_owned()
    if stopped:
        serverapp.log.info("gpulab: stopped %d cluster(s) with the server", stopped)
