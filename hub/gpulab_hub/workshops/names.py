"""Workshop and account names: one rule for every row of a roster.

Usernames go through ``gpulab_hub.usernames.normalize_username`` (NFKC, casefold and
validation: the hub's one place for that rule, also used by its authenticators); the
hub's authenticator then has the last word (``normalize_username`` and
``validate_username``, see ``accounts``), so an account is only ever created under the
name its owner's login normalises to.
"""

from __future__ import annotations

import re

from gpulab_hub.usernames import normalize_username

__all__ = ["check_workshop_name", "instructor_role_name", "normalize_username"]

# A workshop names a JupyterHub group and the role "instructor-NAME", whose names JupyterHub
# restricts (lower case, starts with a letter, ends with a letter or digit).
_WORKSHOP = re.compile(r"[a-z][a-z0-9._-]{0,46}[a-z0-9]")


def check_workshop_name(name: object) -> str:
    """``name`` if it can name a workshop (its group and its instructor role), else
    ValueError naming the field."""
    if not isinstance(name, str) or not _WORKSHOP.fullmatch(name):
        raise ValueError(
            f"name must be 2-48 characters a-z, 0-9, '.', '_' or '-', starting with a "
            f"letter and ending with a letter or digit, not {name!r}"
        )
    return name


def instructor_role_name(workshop: str) -> str:
    return f"instructor-{workshop}"
