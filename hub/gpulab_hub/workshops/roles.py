"""The roles of gpulab, as JupyterHub RBAC sees them.

- researcher: JupyterHub's default ``user`` role (``self``: their own servers, tokens and
  activity; gpulab's config adds the quota service). Clusters and runs live in the user's
  own server, so ``self`` covers them.
- student: the same ``user`` role. What sets a student apart is their workshop's group
  policy in the quota ledger (profiles, GPUs, GPU-hours), which the spawner enforces; no
  extra scopes are needed, so none are granted.
- instructor: one role per workshop, ``instructor-NAME`` (``instructor_role``), every scope
  filtered to the workshop's group: see its users and their activity, start, stop and open
  their servers. No ``admin:*``, no writes to users, groups or roles, no tokens: an
  instructor can't change anyone's role, group or quota (quota overrides need the quota
  service's ``custom:gpulab:operate``, held by operators only).
- operator: the hub's admins (``c.Authenticator.admin_users``).
"""

from __future__ import annotations

from gpulab_hub.workshops.names import instructor_role_name

# Scopes of an instructor, each filtered to one group (JupyterHub expands "!group=NAME" to
# the group's members at every request, so students added later are covered too).
INSTRUCTOR_SCOPES = (
    "list:users",
    "read:users",
    "read:users:activity",
    "read:servers",
    "servers",  # start and stop
    "access:servers",  # open a student's JupyterLab
    "read:groups",
)


def instructor_role(workshop: str) -> dict:
    """The role of ``workshop``'s instructors, as ``jupyterhub.roles.create_role`` takes it."""
    return {
        "name": instructor_role_name(workshop),
        "description": f"Instructors of workshop {workshop}: its students' servers only",
        "scopes": [f"{scope}!group={workshop}" for scope in INSTRUCTOR_SCOPES],
    }
