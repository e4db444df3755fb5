"""The dashboards service: a hub-managed Panel server for run dashboards, behind the hub's
OAuth login, under ``/services/dashboards/`` (``gpulab.dashboards.urls``).

JupyterHub starts it (``python -m gpulab_hub.dashboards_service``) with its API token and
this environment (set in jupyterhub_config.py's "Dashboards" section):

- ``GPULAB_RUNS_DIR``: the runs root every user's server writes to (``<state>/runs``);
- ``GPULAB_RUN_LINKS``: ``1`` serves view-only links, ``0`` refuses them all (404);
- ``GPULAB_LEDGER_URL``: the quota ledger, for the usage page;
- ``GPULAB_DASHBOARDS_ORIGINS``: the hub's public ``host:port`` (comma-separated if more):
  the only origins whose pages may open the Bokeh websocket.

Pages (all HTML; a token in an ``Authorization: token ...`` header works as the login
cookie does, for scripts):

- ``/`` the caller's runs and the runs shared with them, with links and a compare form;
  an instructor also gets their students' runs (``?student=NAME``: that student's only);
- ``runs/OWNER/RUN_ID``: that run's live dashboard, read-only;
- ``compare?run=OWNER/RUN_ID&run=...``: one metric overlaid across the listed runs the
  caller may see (the others are left out, as if missing), with their configs and results;
- ``usage``: GPU-hours and energy by user and group over time, allocations open now
  (operators: hub admins or ``custom:gpulab:operate``; others get 403);
- ``links/TOKEN``: a view-only link: that one run's dashboard, no hub login needed (the
  token is the credential, read-only, that run only).

Access: every run page asks ``RunStore.viewable`` with the caller's hub name and groups
(or the link token) before it creates a Bokeh session, and answers the same 404 page for a
missing run and a forbidden one. Instructors: the holder of a workshop's role
``instructor-NAME`` may also view, read-only, the runs of that workshop group's members
(``Workshops``: who instructs whom, read from the hub with the service's own token and
kept ``WORKSHOPS_TTL`` seconds; closing a workshop deletes its role, so its instructor
loses access within that time). Each live session re-checks before every refresh, so an
unshare or a revoked link stops it at its next refresh (a second), and the next page load
gets the 404. There is no write endpoint: changing an ACL is the owner's, through their own
server (``gpulab.runs.acl``). The Bokeh websocket (``.../ws``) needs the same login (links:
none) and accepts only ``GPULAB_DASHBOARDS_ORIGINS``; sessions are signed, and the session
token carries no cookies or headers.

It exits when the hub that started it goes away.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import panel as pn
from bokeh.server.auth_provider import AuthProvider
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from panel.io.server import DocHandler, get_server
from tornado import httpclient, ioloop, web
from tornado.httputil import url_concat

from gpulab.dashboards import urls
from gpulab.dashboards.compare import MAX_RUNS
from gpulab.dashboards.pages import (
    NOT_FOUND_HTML,
    Grant,
    compare_page,
    find_link,
    index_html,
    parse_run_refs,
    run_page,
    visible_grants,
)
from gpulab.runs import RunStore
from gpulab.runs.errors import InvalidRunInput
from gpulab_hub.workshops.names import instructor_role_name

SERVICE_NAME = urls.SERVICE_NAME
OPERATOR_SCOPE = "custom:gpulab:operate"
LINKS_ENV = "GPULAB_RUN_LINKS"
LEDGER_ENV = "GPULAB_LEDGER_URL"
ORIGINS_ENV = "GPULAB_DASHBOARDS_ORIGINS"
# The "user" a link page's handlers see: no hub identity, the token decides.
LINK_VIEWER = {"name": None, "kind": "link"}
# How long the service trusts its last reading of who instructs whom (seconds).
WORKSHOPS_TTL = 10.0
INSTRUCTOR_ROLE_PREFIX = instructor_role_name("")
log = logging.getLogger("gpulab.dashboards.service")


def links_enabled(environ: dict[str, str] | None = None) -> bool:
    """``GPULAB_RUN_LINKS``: on unless ``0``/``false``/``no``/``off``."""
    value = (environ if environ is not None else os.environ).get(LINKS_ENV, "1")
    return value.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass
class Settings:
    """What the service needs, read once from its environment."""

    runs_dir: str
    links: bool
    ledger_url: str
    origins: list[str]
    prefix: str  # ends with "/"
    host: str
    port: int

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        url = urlparse(env["JUPYTERHUB_SERVICE_URL"])
        prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", urls.SERVICE_PREFIX)
        origins = [o.strip() for o in env.get(ORIGINS_ENV, "").split(",") if o.strip()]
        if not origins:
            raise SystemExit(f"{ORIGINS_ENV} must name the hub's public host:port")
        return cls(
            runs_dir=env["GPULAB_RUNS_DIR"], links=links_enabled(env),
            ledger_url=env.get(LEDGER_ENV, ""), origins=origins,
            prefix=prefix if prefix.endswith("/") else prefix + "/",
            host=url.hostname or "127.0.0.1", port=url.port or 80,
        )


def is_operator(user: dict) -> bool:
    return bool(user.get("admin")) or OPERATOR_SCOPE in set(user.get("scopes", []))


class HubClient:
    """The hub calls the service makes with its own token (``list:users``,
    ``read:users:groups``, ``read:roles:users``): everyone's groups and roles."""

    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def users(self, page: int = 200) -> list[dict] | None:
        """Every user's model (name, groups, roles), page by page; None if the hub did
        not answer every page (the caller must not act on half a list)."""
        found: list[dict] = []
        while True:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"{self.api_url}/users?offset={len(found)}&limit={page}",
                headers={"Authorization": f"token {self.token}"}, raise_error=False,
            )
            if response.code != 200:
                log.warning("the hub answered %s to the users listing", response.code)
                return None
            users = json.loads(response.body)
            found.extend(users)
            if len(users) < page:
                return found

    async def groups_by_user(self, page: int = 200) -> dict[str, list[str]]:
        """user -> groups, page by page (the hub answers at most a page per request)."""
        found: dict[str, list[str]] = {}
        offset = 0
        while True:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"{self.api_url}/users?offset={offset}&limit={page}",
                headers={"Authorization": f"token {self.token}"}, raise_error=False,
            )
            if response.code != 200:
                return found
            users = json.loads(response.body)
            found.update({u["name"]: list(u.get("groups", [])) for u in users})
            offset += len(users)
            if len(users) < page:
                return found


def students_by_instructor(users: list[dict]) -> dict[str, frozenset[str]]:
    """instructor -> the members of the workshops whose ``instructor-NAME`` role they hold
    (themselves left out). The role is what the hub grants an instructor by; closing a
    workshop deletes it."""
    members: dict[str, set[str]] = {}
    for user in users:
        for group in user.get("groups", []):
            members.setdefault(group, set()).add(user["name"])
    students: dict[str, frozenset[str]] = {}
    for user in users:
        workshops = [role.removeprefix(INSTRUCTOR_ROLE_PREFIX) for role in user.get("roles", [])
                     if role.startswith(INSTRUCTOR_ROLE_PREFIX)]
        taught = set().union(*(members.get(w, set()) for w in workshops)) - {user["name"]}
        if taught:
            students[user["name"]] = frozenset(taught)
    return students


class Workshops:
    """Who instructs whom, read from the hub at most every ``ttl`` seconds.

    ``refresh()`` (async, on the event loop) re-reads when the last reading is older than
    ``ttl``; ``instructs``/``students_of`` answer from the last reading without waiting,
    so a live dashboard's re-check costs no request; ``keep_fresh()`` (every ``ttl``)
    re-reads while anyone asked lately, so an open dashboard notices a closed workshop.
    A failed reading forgets everyone's students: no access is better than stale access."""

    def __init__(self, hub: HubClient, ttl: float = WORKSHOPS_TTL):
        self.hub = hub
        self.ttl = ttl
        self._students: dict[str, frozenset[str]] = {}
        self._read_at = -float("inf")
        self._asked_at = -float("inf")
        self._lock = asyncio.Lock()

    def keep_fresh(self) -> None:
        if time.monotonic() - self._asked_at < 3 * self.ttl:
            asyncio.ensure_future(self.refresh())

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self.ttl:
                return
            users = await self.hub.users()
            self._students = {} if users is None else students_by_instructor(users)
            self._read_at = time.monotonic()

    def students_of(self, instructor: str) -> frozenset[str]:
        self._asked_at = time.monotonic()
        if time.monotonic() - self._read_at > 3 * self.ttl:  # refreshes stopped: trust none
            return frozenset()
        return self._students.get(instructor, frozenset())

    def instructs(self, instructor: str, owner: str) -> bool:
        return owner in self.students_of(instructor)


class HubUserProvider(AuthProvider):
    """Bokeh's auth hook: the hub user behind the request (HubOAuth cookie or token
    header), or ``LINK_VIEWER`` on a link's paths (the page checks the token).

    Every Bokeh handler asks it, the websocket included: no login, no websocket (403)."""

    def __init__(self, hub_auth: HubOAuth, link_prefix: str):
        self.hub_auth = hub_auth
        self.link_prefix = link_prefix
        super().__init__()

    @property
    def get_user_async(self):
        async def get_user(handler: web.RequestHandler) -> dict | None:
            if handler.request.path.startswith(self.link_prefix):
                return LINK_VIEWER
            return await self.hub_auth.get_user(handler, sync=False)

        return get_user

    @property
    def get_login_url(self):
        def login_url(handler: web.RequestHandler) -> str:
            state = self.hub_auth.set_state_cookie(handler, next_url=handler.request.uri)
            return url_concat(self.hub_auth.login_url, {"state": state})

        return login_url


class GuardedDocHandler(DocHandler):
    """A Panel document page that first decides whether the caller may see it.

    ``grant()`` returns what the page's app reads from ``request.gpulab_grant`` (or
    raises ``web.HTTPError``); only then is a Bokeh session created."""

    service: Service

    def initialize(self, *args: Any, service: Service, **kwargs: Any) -> None:
        self.service = service
        super().initialize(*args, **kwargs)

    def get_login_url(self) -> str:
        # Panel's LoginUrlMixin makes it relative ("." + url); the hub's is absolute.
        return self.application.auth_provider.get_login_url(self)

    async def grant(self, **route: str) -> Any:
        raise NotImplementedError

    @web.authenticated
    async def get(self, *args: Any, **kwargs: str) -> None:
        self.request.gpulab_grant = await self.grant(**kwargs)
        await super().get(*args, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        if status_code == 404:
            self.finish(NOT_FOUND_HTML)  # one page: missing and forbidden look the same
            return
        error = kwargs.get("exc_info", (None, None))[1]
        message = getattr(error, "log_message", None) or self._reason
        self.finish(f"<!DOCTYPE html><h1>{status_code}</h1><p>{html.escape(str(message))}</p>")

    def viewer(self) -> tuple[str, tuple[str, ...]]:
        user = self.current_user
        return user["name"], tuple(user.get("groups", ()))

    async def viewer_grant(self, owner: str, run_id: str) -> Grant:
        """The logged-in viewer's grant for a run: the ACL, or instructing its owner."""
        name, groups = self.viewer()
        await self.service.workshops.refresh()
        return Grant(owner=owner, run_id=run_id, user=name, groups=groups,
                     instructs=self.service.workshops.instructs)


class RunPageHandler(GuardedDocHandler):
    async def grant(self, owner: str = "", run_id: str = "") -> Grant:
        grant = await self.viewer_grant(owner, run_id)
        if not await asyncio.to_thread(grant.allowed, self.service.store):
            raise web.HTTPError(404)
        return grant


class LinkPageHandler(GuardedDocHandler):
    async def grant(self, token: str = "") -> Grant:
        if not self.service.settings.links:
            raise web.HTTPError(404)
        grant = await asyncio.to_thread(find_link, self.service.store, token)
        if grant is None or not await asyncio.to_thread(grant.allowed, self.service.store):
            raise web.HTTPError(404)
        return grant


class ComparePageHandler(GuardedDocHandler):
    async def grant(self) -> list[Grant]:
        refs = parse_run_refs(self.get_arguments("run"))
        if len(refs) > MAX_RUNS:
            raise web.HTTPError(400, f"run: compare at most {MAX_RUNS} runs, not {len(refs)}")
        grants = [await self.viewer_grant(o, r) for o, r in refs]
        visible = await asyncio.to_thread(visible_grants, self.service.store, grants)
        if not visible:
            raise web.HTTPError(404)
        return visible


class UsagePageHandler(GuardedDocHandler):
    async def grant(self) -> dict[str, list[str]]:
        if not is_operator(self.current_user):
            raise web.HTTPError(
                403, f"only operators (hub admins or {OPERATOR_SCOPE}) may see everyone's usage"
            )
        if self.service.ledger is None:
            raise web.HTTPError(404)
        return await self.service.hub.groups_by_user()


class IndexHandler(HubOAuthenticated, web.RequestHandler):
    """The landing page (where the hub's OAuth login lands, too)."""

    def initialize(self, service: Service) -> None:
        self.service = service

    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        name, groups = user["name"], list(user.get("groups", []))
        store = self.service.store
        own = await asyncio.to_thread(store.list_runs, name)
        shared = await asyncio.to_thread(store.shared_with, name, groups)
        await self.service.workshops.refresh()
        taught = self.service.workshops.students_of(name)
        students = None
        if taught:
            # ?student=NAME (the instructor page's "runs" link): that one student's runs.
            wanted = self.get_argument("student", "")
            shown = sorted(taught & {wanted}) if wanted else sorted(taught)
            students = await asyncio.to_thread(self._runs_of, shown)
        page = index_html(name, own, shared, self.service.settings.prefix,
                          operator=is_operator(user), students=students)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)

    def _runs_of(self, owners: list[str]) -> list:
        found = []
        for owner in owners:
            try:
                found.extend(self.service.store.list_runs(owner))
            except InvalidRunInput:  # a hub name the run store can't hold: no runs
                continue
        return found


class Service:
    """The service's state: its settings, the run store, the ledger and the hub client."""

    def __init__(self, settings: Settings, hub: HubClient):
        self.settings = settings
        self.store = RunStore(settings.runs_dir)
        self.hub = hub
        self.workshops = Workshops(hub)
        self.ledger = None
        if settings.ledger_url:
            from gpulab.quota.ledger import Ledger

            self.ledger = Ledger(settings.ledger_url)

    # The apps: each reads the grant its guarded handler put on the request.

    def _grant(self) -> Any:
        request = pn.state.curdoc.session_context.request
        return getattr(request, "gpulab_grant", None)

    def run_app(self) -> Any:
        return run_page(self.store, self._grant())

    def compare_app(self) -> Any:
        return compare_page(self.store, self._grant())

    def usage_app(self) -> Any:
        from gpulab.dashboards.usage import UsageData, UsageView

        groups = self._grant()
        if groups is None or self.ledger is None:
            return pn.pane.HTML("<p>Not available.</p>")
        pn.state.curdoc.title = "gpulab: GPU usage"
        return UsageView(data=UsageData.with_groups(self.ledger, groups))


def make_server(service: Service, hub_auth: HubOAuth) -> Any:
    """The Panel (Bokeh) server with the guarded pages in front of Panel's own routes."""
    settings = service.settings
    prefix = settings.prefix.rstrip("/")
    apps = {
        "/runs/{owner}/{run_id}": service.run_app,
        "/links/{token}": service.run_app,
        "/compare": service.compare_app,
        "/usage": service.usage_app,
    }
    server = get_server(
        apps, port=settings.port, address=settings.host, prefix=prefix,
        websocket_origin=settings.origins, start=False, show=False, title="gpulab dashboards",
        cookie_secret=secrets.token_hex(32), sign_sessions=True,
        secret_key=secrets.token_urlsafe(32), generate_session_ids=True,
        # The session token (in the page) carries neither the login cookie nor headers.
        include_cookies=[], include_headers=[],
        auth_provider=HubUserProvider(hub_auth, f"{prefix}/links/"),
        extra_patterns=[("/oauth_callback", HubOAuthCallbackHandler)],
    )
    tornado_app = server._tornado  # Bokeh keeps its tornado Application here
    contexts = tornado_app._applications  # route -> ApplicationContext (Bokeh's)

    def page(route: str, pattern: str, handler: type) -> tuple:
        context = contexts[route]
        return (prefix + pattern, handler, {
            "service": service, "application_context": context,
            "bokeh_websocket_path": prefix + route + "/ws",
        })

    # add_handlers puts these before Bokeh's own routes, so every document page of these
    # apps goes through its guard (Panel's unguarded handlers are never reached).
    runs_route = next(r for r in contexts if r.startswith("/runs/"))
    links_route = next(r for r in contexts if r.startswith("/links/"))
    tornado_app.add_handlers(r".*", [
        (prefix + "/?", IndexHandler, {"service": service}),
        page(runs_route, r"/runs/(?P<owner>[^/]+)/(?P<run_id>[^/]+)/?", RunPageHandler),
        page(links_route, r"/links/(?P<token>[^/]+)/?", LinkPageHandler),
        page("/compare", "/compare/?", ComparePageHandler),
        page("/usage", "/usage/?", UsagePageHandler),
    ])
    return server


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    hub_auth = HubOAuth.instance(api_token=os.environ["JUPYTERHUB_API_TOKEN"],
                                 cache_max_age=60)
    hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    service = Service(settings, hub)
    server = make_server(service, hub_auth)
    server.start()
    loop = ioloop.IOLoop.current()
    hub_pid = os.getppid()

    def watch_parent() -> None:
        if os.getppid() != hub_pid:  # the hub is gone (killed): don't outlive it
            loop.stop()

    ioloop.PeriodicCallback(watch_parent, 2000).start()
    ioloop.PeriodicCallback(service.workshops.keep_fresh, WORKSHOPS_TTL * 1000).start()
    for signum in (signal.SIGINT, signal.SIGTERM):  # the hub stops services with these
        signal.signal(signum, lambda *_: loop.add_callback_from_signal(loop.stop))
    print(f"gpulab-dashboards: serving {settings.prefix} on {settings.host}:{settings.port}",
          flush=True)
    loop.start()
    print("gpulab-dashboards: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
