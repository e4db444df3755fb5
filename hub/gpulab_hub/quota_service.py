"""The quota service: a hub-managed service that runs the accountant and answers the
quota API.

JupyterHub starts it (``python -m gpulab_hub.quota_service --config jupyterhub_config.py``)
with its own API token; it reads the same ``c.GpulabQuota`` settings as the spawners, and
every ``tick_seconds``:

- asks the hub which servers run (and each user's groups, for their policy),
- lets the ``Accountant`` accrue, reconcile, warn and decide what to stop,
- asks the hub to stop those servers, and marks GPU-busy servers active so the HTTP idle
  culler spares them.

Its API, under the service's prefix (``/services/gpulab-quota/``), authenticated by the hub
(a token or the hub's OAuth login):

- ``GET api/me``: the caller's allocations, usage, limits, budget left and warnings;
- ``GET api/usage?since=7d``: everyone's usage (operators: hub admins);
- ``GET api/policies``: the policies: the config file's, the operators' overrides kept in
  the ledger, and the merged result (operators);
- ``PUT api/policies/default``, ``api/policies/groups/NAME``, ``api/policies/users/NAME``
  with a JSON body of limits (``{"max_gpus": 2, "gpu_hours": 10, "window": "1d"}``; ``{}``
  removes the override): set that level's override, audited (operators). The override
  wins over the config file field by field; a bad field is a 400 naming it, nothing set;
- ``GET metrics``: Prometheus metrics (operators, or a token with ``read:metrics``).

Writes are XSRF-checked (tornado's ``xsrf_cookies``, with JupyterHub's session-bound
tokens) unless the request carries its token in an ``Authorization: token ...`` header,
which a browser never adds to a cross-site request; cookie (OAuth) clients send the
``_xsrf`` cookie's value back in an ``X-XSRFToken`` header.

It exits when the hub that started it goes away, so a killed hub leaves no orphan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from urllib.parse import quote, urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, ioloop, web
from traitlets import Float
from traitlets.config import Configurable
from traitlets.config.loader import PyFileConfigLoader

from gpulab.quota.accountant import Accountant
from gpulab.quota.policy import PolicyError
from gpulab.quota.reports import usage_report, user_report
from gpulab.units import parse_duration
from gpulab_hub.quota import GpulabQuota
from gpulab_hub.quota_metrics import render_metrics

SERVICE_NAME = "gpulab-quota"
OPERATOR_SCOPE = "custom:gpulab:operate"
MAX_POLICY_BODY = 16 * 1024  # bytes of a PUT api/policies body; more is a 413
# The server refuses larger bodies outright (the API's only bodies are policies).
MAX_REQUEST_BODY = 1024 * 1024


class QuotaService(Configurable):
    tick_seconds = Float(
        30.0, config=True, help="""Seconds between two accounting rounds (accrual and checks)."""
    )
    warn_before_seconds = Float(
        900.0,
        config=True,
        help="""Warn a user this many seconds before their budget or session length runs out.""",
    )
    grace_seconds = Float(
        300.0,
        config=True,
        help="""Seconds a server may run past its budget or session length before it is
        stopped (time to save work after the warning).""",
    )
    gpu_idle_seconds = Float(
        None,
        allow_none=True,
        config=True,
        help="""Stop a GPU server whose GPUs stayed at 0 % utilisation this long, even with
        its browser tab open. None (the default) never culls for idle GPUs.""",
    )
    reconcile_after_seconds = Float(
        300.0,
        config=True,
        help="""Close a ledger allocation whose server the hub no longer runs once it is this
        old (younger ones may still be spawning).""",
    )


class HubClient:
    """The few hub REST calls the service makes, with its own token."""

    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.http = httpclient.AsyncHTTPClient()

    async def _call(self, method: str, path: str, body: dict | None = None):
        response = await self.http.fetch(
            f"{self.api_url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            raise_error=False,
        )
        if response.code >= 400 and response.code != 404:
            raise RuntimeError(f"hub API {method} {path}: {response.code} {response.body[:200]!r}")
        return json.loads(response.body) if response.body else None

    async def servers(self) -> tuple[set[tuple[str, str]], dict[str, list[str]]]:
        """Running or starting servers as (user, server name), and each user's groups."""
        users = await self._call("GET", "/users?state=active&include_stopped_servers=0")
        running, groups = set(), {}
        for user in users or []:
            groups[user["name"]] = user.get("groups", [])
            for name in user.get("servers", {}):
                running.add((user["name"], name))
        return running, groups

    async def user_groups(self, name: str) -> list[str]:
        user = await self._call("GET", f"/users/{quote(name)}")
        return (user or {}).get("groups", [])

    async def stop_server(self, user: str, server: str) -> None:
        path = f"/users/{quote(user)}/server"
        if server:
            path = f"/users/{quote(user)}/servers/{quote(server)}"
        await self._call("DELETE", path)

    async def mark_active(self, user: str, server: str, when: str) -> None:
        await self._call(
            "POST", f"/users/{quote(user)}/activity", {"servers": {server: {"last_activity": when}}}
        )


class QuotaHandler(HubOAuthenticated, web.RequestHandler):
    def initialize(self, service: Service):
        self.service = service
        self.hub_auth = self.settings["hub_auth"]

    def get_login_url(self):
        # A client that sent a token gets a 403 to read, not a redirect to a login page;
        # a browser without one is sent through the hub's OAuth login.
        if self._token_header():
            raise web.HTTPError(
                403, "the token is invalid, expired or lacks access to this service"
            )
        return super().get_login_url()

    def write_json(self, value, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code, **kwargs):
        reason = self._reason
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            reason = error.log_message
        self.write_json({"status": status_code, "message": reason}, status_code)

    def is_operator(self) -> bool:
        user = self.current_user
        return bool(user.get("admin")) or OPERATOR_SCOPE in set(user.get("scopes", []))

    def require_operator(self, what: str) -> None:
        if not self.is_operator():
            raise web.HTTPError(403, f"only operators (hub admins or {OPERATOR_SCOPE}) may {what}")

    def _token_header(self) -> bool:
        """Whether the request carries a token in its Authorization header."""
        header = self.request.headers.get("Authorization", "")
        return bool(self.hub_auth.auth_header_pat.match(header))

    def check_xsrf_cookie(self):
        # A browser adds no Authorization header to a cross-site request (not without a
        # CORS preflight, which this service never grants), so such a request can't be
        # forged; every other write (cookie auth) gets JupyterHub's XSRF check.
        if self._token_header():
            return
        super().check_xsrf_cookie()

    def get_current_user(self):
        user = super().get_current_user()
        # A token header that doesn't authenticate must not fall back to the cookie: the
        # XSRF check above was skipped because of that header.
        if user and self._token_header() and not getattr(self, "_token_authenticated", False):
            return None
        return user


class IndexHandler(QuotaHandler):
    """The service's root, where the hub's OAuth login lands: what there is to ask."""

    @web.authenticated
    def get(self):
        prefix = self.settings["service_prefix"]
        endpoints = {"me": f"{prefix}api/me"}
        if self.is_operator():
            endpoints |= {
                "usage": f"{prefix}api/usage",
                "policies": f"{prefix}api/policies",
                "metrics": f"{prefix}metrics",
            }
        self.write_json({"user": self.current_user["name"], "endpoints": endpoints})


class MeHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        name = self.current_user["name"]
        groups = self.current_user.get("groups") or await self.service.hub.user_groups(name)
        self.write_json(self.service.report_for(name, groups))


class UsageHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        if not self.is_operator():
            raise web.HTTPError(403, "only operators (hub admins) may read everyone's usage")
        since = self.get_argument("since", "7d")
        try:
            seconds = parse_duration(since, name="since")
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        self.write_json(self.service.usage_report(seconds))


class PoliciesHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        self.require_operator("read the policies")
        self.xsrf_token  # noqa: B018 - sets the _xsrf cookie a browser's PUT sends back
        self.write_json(self.service.quota.policies_view())


class PolicyHandler(QuotaHandler):
    LEVELS = {"default": "default", "groups": "group", "users": "user"}

    @web.authenticated
    async def put(self, kind: str, name: str = ""):
        self.require_operator("change policies")
        if len(self.request.body) > MAX_POLICY_BODY:
            raise web.HTTPError(413, f"a policy body is at most {MAX_POLICY_BODY} bytes")
        try:
            config = json.loads(self.request.body, parse_constant=_no_constant)
        except ValueError as e:  # also UnicodeDecodeError
            raise web.HTTPError(400, f"the body must be a JSON object of limits: {e}") from None
        try:
            view = self.service.quota.set_policy(
                self.LEVELS[kind], name, config, actor=self.current_user["name"]
            )
        except PolicyError as e:
            raise web.HTTPError(400, str(e)) from None
        self.write_json(view)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class MetricsHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        scopes = set(self.current_user.get("scopes", []))
        if not (self.is_operator() or "read:metrics" in scopes):
            raise web.HTTPError(403, "metrics need an operator or a token with read:metrics")
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish(render_metrics(self.service))


class Service:
    """The quota service's state: the quota object, the accountant and the hub client."""

    def __init__(self, config, hub: HubClient):
        self.settings = QuotaService(config=config)
        self.quota = GpulabQuota.instance(config=config)
        self.hub = hub
        self.groups: dict[str, list[str]] = {}
        self.accountant = Accountant(
            self.quota.ledger,
            self.quota.inventory,
            lambda user: self.quota.policy_for(user, self.groups.get(user, [])),
            warn_before_seconds=self.settings.warn_before_seconds,
            grace_seconds=self.settings.grace_seconds,
            gpu_idle_seconds=self.settings.gpu_idle_seconds,
            reconcile_after_seconds=self.settings.reconcile_after_seconds,
        )

    async def tick(self) -> None:
        running, self.groups = await self.hub.servers()
        # The ledger's calls block: keep them off the loop that answers the API.
        report = await asyncio.to_thread(self.accountant.tick, running)
        for allocation, reason in report.stop:
            print(
                f"gpulab-quota: stopping {allocation.user}/{allocation.server or 'default'}: "
                f"{reason}",
                flush=True,
            )
            await self.hub.stop_server(allocation.user, allocation.server)
        now = self.quota.ledger.db_now().isoformat()
        for allocation in report.busy:
            await self.hub.mark_active(allocation.user, allocation.server, now)

    def report_for(self, name: str, groups: list[str]) -> dict:
        policy = self.quota.policy_for(name, groups)
        return user_report(self.quota.ledger, name, policy, self.accountant.warnings(name))

    def usage_report(self, since_seconds: float) -> dict:
        return usage_report(self.quota.ledger, since_seconds, self.groups)


def make_app(service: Service, prefix: str) -> web.Application:
    handlers = [
        (prefix, IndexHandler),
        (f"{prefix}api/me", MeHandler),
        (f"{prefix}api/usage", UsageHandler),
        (f"{prefix}api/policies", PoliciesHandler),
        (f"{prefix}api/policies/(default)", PolicyHandler),
        (f"{prefix}api/policies/(groups|users)/([^/]+)", PolicyHandler),
        (f"{prefix}metrics", MetricsHandler),
        (f"{prefix}oauth_callback", HubOAuthCallbackHandler),
    ]
    auth = HubOAuth(api_token=os.environ["JUPYTERHUB_API_TOKEN"], cache_max_age=60)
    return web.Application(
        [
            (path, handler, {"service": service})
            if handler is not HubOAuthCallbackHandler
            else (path, handler)
            for path, handler in handlers
        ],
        cookie_secret=os.urandom(32),
        hub_auth=auth,
        service_prefix=prefix,
        # Writes (PUT api/policies) need an XSRF token unless a token header authenticates
        # them: see QuotaHandler.check_xsrf_cookie.
        xsrf_cookies=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpulab-quota-service")
    parser.add_argument("--config", required=True, help="the hub's jupyterhub_config.py")
    args = parser.parse_args(argv)
    path = os.path.abspath(args.config)
    config = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(path)).load_config()
    hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    service = Service(config, hub)
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
    make_app(service, prefix).listen(url.port, url.hostname, max_body_size=MAX_REQUEST_BODY)

    loop = ioloop.IOLoop.current()
    hub_pid = os.getppid()

    async def tick():
        if os.getppid() != hub_pid:  # the hub is gone (killed): don't outlive it
            loop.stop()
            return
        try:
            await service.tick()
        except Exception as e:  # one failed round must not end accounting
            print(f"gpulab-quota: accounting round failed: {e!r}", file=sys.stderr, flush=True)

    ioloop.PeriodicCallback(tick, service.settings.tick_seconds * 1000).start()
    loop.add_callback(tick)
    loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
