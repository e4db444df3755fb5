"""Workshops: a class of students as one JupyterHub group, with its instructors and policy.

- ``roster``: the students' CSV, every row checked before anything is created;
- ``names``: the workshop name rule; usernames through ``gpulab_hub.usernames``;
- ``roles``: the per-workshop instructor role (JupyterHub RBAC scopes filtered by group);
- ``accounts``: create and close a workshop inside the hub process, the hub's accounts,
  group, roles and NativeAuthenticator's records in one database transaction;
- ``first_password``: students are sent to change their one-time password at login;
- ``api``: the operators' API (``/hub/api/gpulab/workshops``) over ``accounts``;
- ``instructor_page``: ``/hub/gpulab/instructor``, an instructor's view of their students;
- ``cli``: ``gpulab workshop create|close`` (a client of the operators' API).

``handlers()`` is what ``c.JupyterHub.extra_handlers`` lists in jupyterhub_config.py.
"""

from __future__ import annotations

from pathlib import Path

# The hub's page templates of gpulab (c.JupyterHub.template_paths).
TEMPLATES_DIR = str(Path(__file__).resolve().parent.parent / "templates")


def handlers() -> list[tuple]:
    """The hub routes of workshops (relative to the hub's prefix, /hub/)."""
    from gpulab_hub.workshops.api import WorkshopCloseHandler, WorkshopsHandler
    from gpulab_hub.workshops.instructor_page import InstructorPageHandler

    return [
        (r"/api/gpulab/workshops", WorkshopsHandler),
        (r"/api/gpulab/workshops/([^/]+)/close", WorkshopCloseHandler),
        (r"/gpulab/instructor", InstructorPageHandler),
    ]
