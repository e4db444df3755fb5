"""REST handlers under ``/gpulab/runs``: the sidebar's runs list and its share controls.

- ``GET /gpulab/runs``: this server's user's runs and the runs shared with them, newest
  first, each with its last step and its link on the hub's dashboards service;
- ``GET /gpulab/runs/OWNER/ID/acl``: who may view the run (owner only);
- ``PATCH /gpulab/runs/OWNER/ID/acl`` ``{"share": {"users", "groups"}, "unshare": {...}}``;
- ``POST /gpulab/runs/OWNER/ID/links`` ``{"expires_in_seconds": N}``: a view-only link, its
  token shown this once (403 when the operator turned links off: ``GPULAB_RUN_LINKS=0``);
- ``DELETE /gpulab/runs/OWNER/ID/links/LINK_ID``: revoke it, at once.

The acting user is the server's user (``$JUPYTERHUB_USER``, else the login that runs it):
only they and the hub's admins reach this server, and runs are owned by that name. A run
that is not theirs answers the same 404 as one that doesn't exist (the store's
``viewable`` rule), so the API can't be used to probe other users' runs. Same auth, XSRF,
body limit and JSON errors as ``handlers``.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from gpulab import runs
from gpulab.clusters import SpecError
from gpulab.dashboards import urls
from gpulab_jupyterlab.handlers import GpulabHandler

LINKS_ENV = "GPULAB_RUN_LINKS"
OWNER = r"(?P<owner>[^/]+)"
RUN_ID = r"(?P<run_id>[^/]+)"
LINK_ID = r"(?P<link_id>[^/]+)"
MAX_RUNS = 500  # the list's length; older runs stay in the store and the file browser
TAIL_BYTES = 4096  # enough of rank 0's metrics file to find its last step
NOT_FOUND = "no such run, or it is not yours"


def links_allowed(env: Any = None) -> bool:
    """The operator's switch: view-only links unless ``GPULAB_RUN_LINKS`` is 0/false/no/off."""
    value = (os.environ if env is None else env).get(LINKS_ENV, "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def server_user() -> str:
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def _answers_run_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The store's refusals as JSON 4xx answers; ``field`` names what was refused."""

    @functools.wraps(method)
    async def wrapper(self: RunsHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except SpecError as e:  # the body's shape (from body_json and the checks below)
            self.reply(400, e.to_json())
        except runs.RunNotFound as e:
            self.reply(404, {"message": str(e) if e.reason == "link" else NOT_FOUND})
        except runs.RunError as e:
            body = {"message": str(e)}
            if e.reason:
                body["field"] = e.reason
            self.reply(e.status_code if 400 <= e.status_code < 500 else 500, body)

    return wrapper


class RunsHandler(GpulabHandler):
    @property
    def store(self) -> runs.RunStore:
        return runs.RunStore()  # $GPULAB_RUNS_DIR, else ~/gpulab-runs

    def groups(self) -> list[str]:
        """The hub groups of the logged-in user, where JupyterHub's identity says them."""
        model = getattr(self.current_user, "hub_user", None) or {}
        found = model.get("groups", []) if isinstance(model, dict) else []
        valid = []
        for group in found if isinstance(found, list) else []:
            with contextlib.suppress(runs.InvalidRunInput):
                valid.append(runs.acl.check_group(group))
        return valid

    def own_run(self, owner: str, run_id: str) -> runs.Run:
        """The run if this server's user owns it; else the same 404 whether or not it
        exists."""
        if owner != server_user():
            raise runs.RunNotFound(NOT_FOUND, reason="run")
        return self.store.viewable(owner, run_id, user=server_user())


def _last_step(store: runs.RunStore, owner: str, run_id: str) -> int | None:
    from gpulab.runs.metrics import metrics_file, parse_lines

    folder = store.open(owner, run_id).folder.child("metrics")
    name = metrics_file(0)
    try:
        size = folder.size(name)
        raw = folder.read_bytes(name, max(0, size - TAIL_BYTES), size)
    except (FileNotFoundError, OSError):
        return None
    if size > TAIL_BYTES:
        raw = raw[raw.find(b"\n") + 1:]  # the first line is cut
    steps = [r["step"] for r in parse_lines(raw) if isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def _listed(store: runs.RunStore, user: str, groups: list[str]) -> list[dict[str, Any]]:
    mine = store.list_runs(user, limit=MAX_RUNS)
    shared = store.shared_with(user, groups)[:MAX_RUNS]
    found = sorted(mine + shared, key=lambda m: (m.created, m.id), reverse=True)[:MAX_RUNS]
    listed = []
    for manifest in found:
        step = None
        with contextlib.suppress(runs.RunError, OSError, ValueError):
            step = _last_step(store, manifest.owner, manifest.id)
        listed.append({
            "id": manifest.id, "name": manifest.name, "status": manifest.status,
            "created": manifest.created, "step": step, "owner": manifest.owner,
            "mine": manifest.owner == user,
            "dashboard_url": urls.run_url(manifest.owner, manifest.id),
        })
    return listed


class RunListHandler(RunsHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        user = server_user()
        listed = await self.call(_listed, self.store, user, self.groups())
        self.reply(200, {"user": user, "links_allowed": links_allowed(), "runs": listed})


def _names_of(body: dict[str, Any], key: str) -> dict[str, list[str]]:
    part = body.get(key, {})
    if not isinstance(part, dict):
        raise SpecError(f"{key} must be an object with users and groups", field=key)
    unknown = sorted(set(part) - {"users", "groups"})
    if unknown:
        raise SpecError(f"unknown field {unknown[0]!r} in {key}; use users and groups",
                        field=f"{key}.{unknown[0]}")
    names = {}
    for what in ("users", "groups"):
        value = part.get(what, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{key}.{what} must be a list of names", field=f"{key}.{what}")
        names[what] = value
    return names


def _change_acl(run: runs.Run, share: dict[str, list[str]], unshare: dict[str, list[str]],
                actor: str) -> dict[str, Any]:
    # Both checked before either is written: a bad name in unshare changes nothing.
    for key, part in (("share", share), ("unshare", unshare)):
        for what, check in (("users", runs.acl.check_user), ("groups", runs.acl.check_group)):
            for name in part[what]:
                try:
                    check(name)
                except runs.InvalidRunInput as e:
                    raise SpecError(str(e), field=f"{key}.{what}") from None
    if any(share.values()):
        run.share_with(share["users"], share["groups"], actor=actor)
    if any(unshare.values()):
        run.unshare(unshare["users"], unshare["groups"], actor=actor)
    return run.acl().public_json()


class RunAclHandler(RunsHandler):
    @web.authenticated
    @authorized
    @_answers_run_errors
    async def get(self, owner: str, run_id: str) -> None:
        run = await self.call(self.own_run, owner, run_id)
        acl = await self.call(run.acl)
        self.reply(200, {**acl.public_json(), "links_allowed": links_allowed()})

    @web.authenticated
    @authorized
    @_answers_run_errors
    async def patch(self, owner: str, run_id: str) -> None:
        body = self.body_json()
        if not isinstance(body, dict):
            raise SpecError("the body must be a JSON object", field="body")
        unknown = sorted(set(body) - {"share", "unshare"})
        if unknown:
            raise SpecError(f"unknown field {unknown[0]!r}; use share and unshare",
                            field=str(unknown[0]))
        share, unshare = _names_of(body, "share"), _names_of(body, "unshare")
        run = await self.call(self.own_run, owner, run_id)
        acl = await self.call(_change_acl, run, share, unshare, server_user())
        self.reply(200, {**acl, "links_allowed": links_allowed()})


class RunLinksHandler(RunsHandler):
    @web.authenticated
    @authorized
    @_answers_run_errors
    async def post(self, owner: str, run_id: str) -> None:
        body = self.body_json()
        if not isinstance(body, dict):
            raise SpecError("the body must be a JSON object", field="body")
        unknown = sorted(set(body) - {"expires_in_seconds"})
        if unknown:
            raise SpecError(f"unknown field {unknown[0]!r}; only expires_in_seconds",
                            field=str(unknown[0]))
        if "expires_in_seconds" not in body:
            raise SpecError("expires_in_seconds is required", field="expires_in_seconds")
        run = await self.call(self.own_run, owner, run_id)
        link_id, token = await self.call(run.create_link, body["expires_in_seconds"],
                                         actor=server_user(), allowed=links_allowed())
        acl = await self.call(run.acl)
        link = next(link for link in acl.public_json()["links"] if link["id"] == link_id)
        url = urls.service_url() + urls.link_path(token)
        self.set_header("Cache-Control", "no-store")  # the token is shown once
        self.reply(201, {**link, "token": token, "url": url})


class RunLinkHandler(RunsHandler):
    @web.authenticated
    @authorized
    @_answers_run_errors
    async def delete(self, owner: str, run_id: str, link_id: str) -> None:
        run = await self.call(self.own_run, owner, run_id)
        await self.call(run.revoke_link, link_id, actor=server_user())
        self.set_status(204)
        self.finish()


def handlers(base_url: str) -> list[tuple[str, type[RunsHandler]]]:
    from jupyter_server.utils import url_path_join

    runs_url = url_path_join(base_url, "gpulab", "runs")
    return [
        (runs_url, RunListHandler),
        (url_path_join(runs_url, OWNER, RUN_ID, "acl"), RunAclHandler),
        (url_path_join(runs_url, OWNER, RUN_ID, "links"), RunLinksHandler),
        (url_path_join(runs_url, OWNER, RUN_ID, "links", LINK_ID), RunLinkHandler),
    ]
