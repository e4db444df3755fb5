"""The operators' workshop API, in the hub process (``c.JupyterHub.extra_handlers``).

- ``GET  /hub/api/gpulab/workshops``: the workshops (groups with workshop settings);
- ``POST /hub/api/gpulab/workshops``: create one; body ``{"name", "students_csv" (the CSV
  text), "instructors": [...], "profiles": [...], "quota": {...}, "course_dir": PATH or
  null}``; 201 with each student's one-time password (shown this once);
- ``POST /hub/api/gpulab/workshops/NAME/close``: body ``{"export_dir": PATH or null}``.

Operators only: the caller (a token or a logged-in browser, XSRF-checked by JupyterHub)
must hold ``admin:users``, ``admin:groups`` and ``admin:servers`` unfiltered, i.e. be an
admin (or the CLI's token). So the API lets no one do what JupyterHub's own API would not
already let them do. Errors are JSON ``{"status", "message", "field", "rows"}``.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from gpulab_hub.quota import GpulabQuota
from gpulab_hub.workshops.accounts import (
    WorkshopError,
    close_workshop,
    create_workshop,
    workshop_settings,
)

OPERATOR_SCOPES = ("admin:users", "admin:groups", "admin:servers")


class WorkshopAPIHandler(APIHandler):
    def check_operator(self) -> str:
        """The caller's name, for the audit log; 403 unless the caller is an operator."""
        caller = self.current_user
        if caller is None:
            raise web.HTTPError(403, "this API needs a hub login or an API token")
        if not all(self.has_scope(scope) for scope in OPERATOR_SCOPES):
            raise web.HTTPError(
                403, "workshops are managed by operators (admin:users, admin:groups, admin:servers)"
            )
        return f"{caller.kind}:{caller.name}"

    @property
    def quota(self) -> GpulabQuota:
        return GpulabQuota.instance(config=self.config)

    def fail(self, error: WorkshopError) -> None:
        self.set_status(error.status_code)
        self.finish(json.dumps(error.to_json()))


class WorkshopsHandler(WorkshopAPIHandler):
    async def get(self):
        self.check_operator()
        from jupyterhub import orm

        workshops = []
        for group in self.db.query(orm.Group).order_by(orm.Group.name):
            settings = workshop_settings(group)
            if settings is not None:
                students = sorted(u.name for u in group.users)
                workshops.append({"name": group.name, **settings, "students": students})
        self.finish(json.dumps({"workshops": workshops}))

    async def post(self):
        actor = self.check_operator()
        try:
            result = await create_workshop(
                self.db, self.authenticator, self.quota, self.get_json_body(), actor
            )
        except WorkshopError as e:
            return self.fail(e)
        self.log.info(
            "%s created workshop %s: %d students, instructors %s",
            actor,
            result["name"],
            len(result["students"]),
            result["instructors"],
        )
        self.set_status(201)
        self.finish(json.dumps(result))


class WorkshopCloseHandler(WorkshopAPIHandler):
    async def post(self, name):
        actor = self.check_operator()
        body = self.get_json_body() or {}
        if not isinstance(body, dict) or set(body) - {"export_dir"}:
            return self.fail(WorkshopError("the body may hold export_dir only", field="body"))
        try:
            result = await close_workshop(
                self.db,
                self.users,
                self.stop_single_user,
                name,
                body.get("export_dir"),
                actor=actor,
            )
        except WorkshopError as e:
            return self.fail(e)
        self.log.info("%s closed workshop %s", actor, name)
        self.finish(json.dumps(result))
