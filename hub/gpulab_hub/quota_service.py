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

- ``GET api/me``: the caller's allocations, usage, limits, budget left, warnings, open
  Dask clusters (``clusters``) and ``dask_workers`` (``{"limit": n or null, "in_use": n}``);
- ``GET api/clusters``: ``{"clusters": [...]}``, the caller's open Dask clusters (operators
  may add ``?user=NAME``);
- ``POST api/clusters`` with ``{"key", "server", "name", "workers", "gpus", "devices"}``
  (``key`` and ``workers`` required; ``server`` "" is the default server): record a Dask
  cluster the caller starts in one of their running servers, counted against their
  ``max_dask_workers`` over all their servers. 201 ``{"cluster": {...}}``; 400
  ``{"message", "field"}`` for a bad or unknown field (nothing recorded); 403 for the
  limit or devices the server does not hold, 409 when that server is not running or the
  key is taken, each ``{"message", "reason", "limit", "in_use"}`` (audited);
- ``PATCH api/clusters/KEY`` with ``{"workers": n}``: scale it (growing is checked against
  the limit, shrinking never refused): 200 ``{"cluster": {...}}``, 400, 403, 404;
- ``DELETE api/clusters/KEY``: the cluster stopped: 204, or 404 when the caller has no such
  open cluster. Stopping a server closes its clusters;
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
from gpulab.quota.ledger import ClusterDenied, ClusterRequestError, UnknownCluster
from gpulab.quota.policy import Policy, PolicyError
from gpulab.quota.reports import usage_report, user_report
from gpulab.units import parse_duration
from gpulab_hub.quota import QUOTA_SERVICE_NAME, GpulabQuota
from gpulab_hub.quota_metrics import render_metrics

SERVICE_NAME = QUOTA_SERVICE_NAME
OPERATOR_SCOPE = "custom:gpulab:operate"
MAX_POLICY_BODY = 16 * 1024  # bytes of a PUT api/policies body; more is a 413
MAX_CLUSTER_BODY = 16 * 1024  # bytes of a POST or PATCH api/clusters body; more is a 413
# The server refuses larger bodies outright (the API's bodies are policies and clusters).
MAX_REQUEST_BODY = 1024 * 1024
# The fields of a POST api/clusters body, and their defaults (None: required).
CLUSTER_FIELDS = {
    "key": None,
    "server": "",
    "name": "",
    "workers": None,
    "gpus": 0,
    "devices": (),
}


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


class ApiError(web.HTTPError):
    """An expected refusal, answered as ``{"status", "message", **extra}`` (e.g. the
    ``field`` of a 400, the ``reason``, ``limit`` and ``in_use`` of a quota denial) and
    logged as one warning line, without a traceback."""

    def __init__(self, status_code: int, message: str, **extra):
        super().__init__(status_code, "%s", message)
        self.message = message
        self.extra = extra


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
        if isinstance(error, ApiError):
            body = {"status": status_code, "message": error.message, **error.extra}
            return self.write_json(body, status_code)
        if isinstance(error, web.HTTPError) and error.log_message:
            reason = error.log_message
        self.write_json({"status": status_code, "message": reason}, status_code)

    def is_operator(self) -> bool:
        user = self.current_user
        return bool(user.get("admin")) or OPERATOR_SCOPE in set(user.get("scopes", []))

    def require_operator(self, what: str) -> None:
        if not self.is_operator():
            raise web.HTTPError(403, f"only operators (hub admins or {OPERATOR_SCOPE}) may {what}")

    async def caller_groups(self) -> list[str]:
        """The caller's JupyterHub groups: from their identity when the token may read them,
        else asked of the hub (with the service's token)."""
        name = self.current_user["name"]
        return self.current_user.get("groups") or await self.service.hub.user_groups(name)

    async def caller_policy(self) -> Policy:
        """The caller's resolved policy, as ``api/me`` shows it (config < overrides, with
        their groups)."""
        groups = await self.caller_groups()
        return await asyncio.to_thread(
            self.service.quota.policy_for, self.current_user["name"], groups
        )

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
        endpoints = {"me": f"{prefix}api/me", "clusters": f"{prefix}api/clusters"}
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
        groups = await self.caller_groups()
        self.write_json(await asyncio.to_thread(self.service.report_for, name, groups))


class ClusterBaseHandler(QuotaHandler):
    """The caller's Dask clusters, counted in the ledger (``Ledger.admit_cluster`` ...):
    a handler parses the body, makes one ledger call and shapes its answer."""

    def json_body(self, fields: dict) -> dict:
        """The body as a JSON object of ``fields`` (name -> default; None: required)."""
        if len(self.request.body) > MAX_CLUSTER_BODY:
            raise web.HTTPError(413, f"a cluster body is at most {MAX_CLUSTER_BODY} bytes")
        try:
            body = json.loads(self.request.body, parse_constant=_no_constant)
        except ValueError as e:  # also UnicodeDecodeError
            raise ApiError(400, f"the body must be a JSON object: {e}", field="body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", field="body")
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise ApiError(
                400,
                f"unknown field {unknown[0][:40]!r}; fields: {', '.join(fields)}",
                field=unknown[0][:64],
            )
        for name, default in fields.items():
            if default is None and name not in body:
                raise ApiError(400, f"{name} is required", field=name)
        return {name: body.get(name, default) for name, default in fields.items()}

    async def ledger_call(self, fn, *args, **kwargs):
        """One ledger call, off the loop; its expected refusals become JSON answers."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ClusterRequestError as e:
            raise ApiError(400, str(e), field=e.field) from None
        except ClusterDenied as e:
            raise ApiError(
                e.status_code, e.message, reason=e.reason, limit=e.limit, in_use=e.in_use
            ) from None
        except UnknownCluster as e:
            raise ApiError(404, str(e)) from None


class ClustersHandler(ClusterBaseHandler):
    @web.authenticated
    async def get(self):
        name = self.current_user["name"]
        user = self.get_argument("user", name)
        if user != name:
            self.require_operator("list another user's clusters")
        self.xsrf_token  # noqa: B018 - sets the _xsrf cookie a browser's POST sends back
        clusters = await asyncio.to_thread(self.service.quota.ledger.open_clusters, user)
        self.write_json({"clusters": [c.to_json() for c in clusters]})

    @web.authenticated
    async def post(self):
        body = self.json_body(CLUSTER_FIELDS)
        name = self.current_user["name"]
        policy = await self.caller_policy()
        cluster = await self.ledger_call(
            self.service.quota.ledger.admit_cluster,
            user=name,
            **body,
            max_workers=policy.max_dask_workers,
            actor=name,
        )
        self.write_json({"cluster": cluster.to_json()}, 201)


class ClusterHandler(ClusterBaseHandler):
    @web.authenticated
    async def patch(self, key: str):
        workers = self.json_body({"workers": None})["workers"]
        name = self.current_user["name"]
        policy = await self.caller_policy()
        cluster = await self.ledger_call(
            self.service.quota.ledger.scale_cluster,
            name,
            key,
            workers,
            max_workers=policy.max_dask_workers,
            actor=name,
        )
        self.write_json({"cluster": cluster.to_json()})

    @web.authenticated
    async def delete(self, key: str):
        name = self.current_user["name"]
        release = self.service.quota.ledger.release_cluster
        if await self.ledger_call(release, name, key, reason="stopped", actor=name) is None:
            raise ApiError(404, f"you have no running cluster {key!r}")
        self.set_status(204)
        self.finish()


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
        (f"{prefix}api/clusters", ClustersHandler),
        (f"{prefix}api/clusters/([^/]+)", ClusterHandler),
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
        # Writes (PUT api/policies, POST/PATCH/DELETE api/clusters) need an XSRF token unless
        # a token header authenticates them: see QuotaHandler.check_xsrf_cookie.
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

    def watch_parent() -> None:
        # Apart from the accounting round, which may wait on a hub that is gone.
        if os.getppid() != hub_pid:  # the hub is gone (killed): don't outlive it
            loop.stop()

    async def tick():
        try:
            await service.tick()
        except Exception as e:  # one failed round must not end accounting
            print(f"gpulab-quota: accounting round failed: {e!r}", file=sys.stderr, flush=True)

    ioloop.PeriodicCallback(watch_parent, 2000).start()
    ioloop.PeriodicCallback(tick, service.settings.tick_seconds * 1000).start()
    loop.add_callback(tick)
    loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
