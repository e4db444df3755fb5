"""``/hub/gpulab/instructor``: an instructor's view of their workshops' students.

For each workshop whose servers the viewer may read (their ``instructor-NAME`` role; an
operator sees every workshop): each student's server state, GPUs in use, last activity
and GPU-hours left, with the actions the viewer's scopes allow: open (``access:servers``),
start and stop (``servers``), and a "runs" link to the student's runs on the dashboards
service (which lets a workshop's instructors view its members' runs). Behind hub login;
the stop action is a POST checked by JupyterHub's XSRF token and against the viewer's
scopes for that one student, and answers a student the viewer may not stop exactly as
one that does not exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlencode

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web

from gpulab.dashboards import urls as dashboard_urls
from gpulab_hub.quota import GpulabQuota
from gpulab_hub.workshops.accounts import workshop_settings
from gpulab_hub.workshops.names import instructor_role_name

TEMPLATE = "gpulab-instructor.html"


@dataclass
class StudentRow:
    name: str
    state: str  # running, starting, stopping, stopped
    gpus: int
    last_activity: str  # ISO time, "" if never
    budget_left: str  # "1.50 GPU-hours", "no limit"
    open_url: str  # "" when the viewer can't open it or it is not running
    start_url: str  # "" when the viewer can't start it or it is running
    can_stop: bool
    runs_url: str = ""  # the student's runs on the dashboards service ("" without it)


def server_state(spawner) -> str:
    if spawner.pending == "spawn":
        return "starting"
    if spawner.pending == "stop":
        return "stopping"
    if spawner.ready:
        return "running"
    return "stopped"


def budget_left(quota: GpulabQuota, name: str, groups: list[str]) -> str:
    policy = quota.policy_for(name, groups)
    if policy.gpu_hours is None:
        return "no limit"
    used = quota.ledger.usage(name, since_seconds_ago=policy.window_seconds).gpu_seconds
    return f"{max(policy.gpu_hours - used / 3600, 0):.2f} GPU-hours"


class InstructorPageHandler(BaseHandler):
    @property
    def quota(self) -> GpulabQuota:
        return GpulabQuota.instance(config=self.config)

    def viewer_workshops(self) -> list[tuple[orm.Group, dict]]:
        workshops = []
        for group in self.db.query(orm.Group).order_by(orm.Group.name):
            settings = workshop_settings(group)
            if settings is not None and self.has_scope(f"read:servers!group={group.name}"):
                workshops.append((group, settings))
        return workshops

    def runs_url(self, group: orm.Group, student: str) -> str:
        """The dashboards service's index, showing ``student``'s runs to their instructor
        ("" for a viewer who doesn't hold the workshop's instructor role, e.g. an operator:
        the service would show them nothing of the student's)."""
        roles = {role.name for role in self.current_user.roles}
        if (dashboard_urls.SERVICE_NAME not in self.services
                or instructor_role_name(group.name) not in roles):
            return ""
        base = url_path_join(self.base_url, "services", dashboard_urls.SERVICE_NAME) + "/"
        return base + "?" + urlencode({"student": student})

    async def student_rows(self, group: orm.Group) -> list[StudentRow]:
        members = sorted(group.users, key=lambda u: u.name)
        memberships = {m.name: [g.name for g in m.groups] for m in members}
        # The ledger (its own database) off the event loop; the hub's session stays on it.
        budgets = await asyncio.to_thread(
            lambda: {name: budget_left(self.quota, name, g) for name, g in memberships.items()}
        )
        rows = []
        for member in members:
            user = self.users[member]
            spawner = user.spawner
            state = server_state(spawner)
            may_access = self.has_scope(f"access:servers!user={member.name}")
            may_manage = self.has_scope(f"servers!user={member.name}")
            activity = member.last_activity
            devices = getattr(spawner, "granted_devices", ()) or ()
            rows.append(
                StudentRow(
                    name=member.name,
                    state=state,
                    gpus=len(devices) if spawner.active else 0,
                    last_activity=activity.isoformat(timespec="seconds") + "Z" if activity else "",
                    budget_left=budgets[member.name],
                    open_url=user.url if state == "running" and may_access else "",
                    start_url=(
                        url_path_join(self.hub.base_url, "spawn", member.name)
                        if state == "stopped" and may_manage
                        else ""
                    ),
                    can_stop=state == "running" and may_manage,
                    runs_url=self.runs_url(group, member.name),
                )
            )
        return rows

    @web.authenticated
    async def get(self):
        workshops = []
        for group, settings in self.viewer_workshops():
            rows = await self.student_rows(group)
            workshops.append({"name": group.name, "settings": settings, "students": rows})
        html = await self.render_template(
            TEMPLATE,
            workshops=workshops,
            action_url=url_path_join(self.hub.base_url, "gpulab/instructor"),
        )
        self.finish(html)

    @web.authenticated
    async def post(self):
        action = self.get_body_argument("action", "")
        name = self.get_body_argument("user", "")
        if action != "stop":
            raise web.HTTPError(400, "action must be 'stop'")
        user = self.find_user(name) if name else None
        # A student the viewer may not manage answers like one that does not exist.
        if user is None or not self.has_scope(f"servers!user={user.name}"):
            raise web.HTTPError(404, "No such student in your workshops")
        spawner = user.spawner
        if spawner.active and not spawner.pending:
            await self.stop_single_user(user, spawner.name)
            message = f"stopped the server of {user.name}"
        else:
            message = f"the server of {user.name} is not running"
        self.log.info("%s: %s", self.current_user.name, message)
        # Back to the page, which shows the new state (no message in the URL: a link
        # could put any text there).
        self.redirect(url_path_join(self.hub.base_url, "gpulab/instructor"), status=303)
