"""Serve the launcher dashboard from the user's own server: ``python -m
gpulab.dashboards.launcher_app --port P --prefix /user/NAME/gpulab-launcher``.

Started by jupyter-server-proxy (``gpulab_jupyterlab.launcher_proxy``), which runs it on
demand and proxies ``/user/NAME/gpulab-launcher/`` to it behind the Jupyter server's login.
The Panel server itself listens on 127.0.0.1 only, and lets through only:

- requests carrying the secret the proxy adds (``X-Gpulab-Launcher-Token``, from
  ``$GPULAB_LAUNCHER_TOKEN``): another local account can't reach the form around the
  server's login, and start clusters and runs as this user;
- websockets whose ``Origin`` is the page's own origin (the ``Host`` the browser asked
  for, which the proxy forwards as is; Jupyter's proxy checked the same), or one named
  with ``--allow-websocket-origin``; never any origin.

It stops with the Jupyter server that started it (when its parent is gone), and its
clusters with it.
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys
from typing import Any
from urllib.parse import urlparse

TOKEN_ENV = "GPULAB_LAUNCHER_TOKEN"
TOKEN_HEADER = "X-Gpulab-Launcher-Token"
PARENT_CHECK_MS = 2000


def token_matches(headers: Any, token: str) -> bool:
    sent = headers.get(TOKEN_HEADER, "") if headers is not None else ""
    return bool(token) and hmac.compare_digest(sent.encode(), token.encode())


def same_origin(origin: str, host: str | None, allowed: set[str]) -> bool:
    """Whether a websocket from ``origin`` may open on a request for ``host``."""
    netloc = urlparse(origin).netloc.lower()
    if not netloc:
        return False
    return netloc in allowed or (host is not None and netloc == host.lower())


def _auth_provider(token: str) -> Any:
    from bokeh.server.auth_provider import AuthProvider

    class ProxyOnly(AuthProvider):
        """Tornado's ``authenticated`` on Bokeh's page and websocket handlers: only the
        proxy's requests have a user."""

        @property
        def get_user(self) -> Any:
            return lambda handler: "proxy" if token_matches(handler.request.headers,
                                                            token) else None

        @property
        def login_url(self) -> str:
            return "/not-through-the-proxy"  # nothing there: the request is refused

    return ProxyOnly()


def _restrict_websocket_origins(allowed: set[str]) -> None:
    # Bokeh only knows a fixed list of hosts; the page's public host is known only per
    # request (the hub's address), so the check compares the Origin with that request's
    # Host. This process serves nothing else, so the class is changed for it alone.
    from bokeh.server.views.ws import WSHandler

    def check_origin(self: Any, origin: str) -> bool:
        return same_origin(origin, self.request.headers.get("Host"), allowed)

    WSHandler.check_origin = check_origin


def _stop_with_parent(server: Any) -> None:
    from tornado.ioloop import PeriodicCallback

    parent = os.getppid()

    def check() -> None:
        if os.getppid() != parent:  # re-parented: the Jupyter server is gone
            server.io_loop.stop()

    PeriodicCallback(check, PARENT_CHECK_MS).start()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gpulab.dashboards.launcher_app",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="", help="the path the proxy serves it under")
    parser.add_argument("--allow-websocket-origin", action="append", default=[],
                        help="host[:port] of a page allowed besides the page's own origin")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"{TOKEN_ENV} is not set: this app is started by jupyter-server-proxy, which "
              "sets it (open /user/NAME/gpulab-launcher/ on your server)", file=sys.stderr)
        return 2
    import panel as pn

    from gpulab.dashboards.launcher import Launcher

    allowed = {o.lower() for o in args.allow_websocket_origin}
    _restrict_websocket_origins(allowed)
    server = pn.serve(lambda: Launcher(), port=args.port, address="127.0.0.1",
                      prefix=args.prefix.rstrip("/"), show=False, start=False,
                      title="gpulab launcher", websocket_origin=sorted(allowed) or None,
                      auth_provider=_auth_provider(token))
    _stop_with_parent(server)
    server.start()
    try:
        server.io_loop.start()
    finally:
        from gpulab.clusters import close_owned

        close_owned()
    return 0


if __name__ == "__main__":
    sys.exit(main())
