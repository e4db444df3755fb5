"""NativeAuthenticator with a bootstrap admin.

The embedded default has no identity provider: people sign up at /hub/signup and an
admin approves them at /hub/authorize. Someone must be the first admin, so on start the
hub creates the admin's account with the password stored in ``admin_password_file``
(made once, mode 0600, by ``gpulab_hub.secrets``). An existing account is never touched,
so a password the admin changed in the hub stays changed.

Logins check the password (bcrypt, about a quarter of a second of CPU by design) in a
thread: NativeAuthenticator checks it on the hub's event loop, which then serves nothing
else meanwhile, so with many people logging in at once (a workshop starting) the hub's
calls to the proxy time out and spawns fail (bench.hub_load found it). The checks run one
at a time in their own thread: fifty logins at once then take at most one core from the
hub's loop, and never hold up the threads that the quota ledger's calls run in.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator
from traitlets import Unicode

from gpulab_hub.secrets import read_or_create_secret
from gpulab_hub.usernames import NormalizedUsernames


# Usernames: NFKC, casefold, a safe ASCII set (gpulab_hub.usernames), in one place.
class GpulabNativeAuthenticator(NormalizedUsernames, NativeAuthenticator):
    admin_password_file = Unicode(
        "",
        config=True,
        help="""File holding the first password of each name in ``admin_users``.

        On start, an admin without an account gets one with this password, approved.
        Empty (the default) creates no accounts: admins sign up like everyone else.""",
    )

    async def authenticate(self, handler, data):
        """NativeAuthenticator's login, the same steps, with bcrypt off the event loop
        (the database is read and written on the loop's thread, as the hub expects)."""
        username = self.normalize_username(data["username"])
        user = self.get_user(username)
        if not user:
            return None
        if self.allowed_failed_logins and self.is_blocked(username):
            return None
        stored = user.password
        valid = await asyncio.get_running_loop().run_in_executor(
            _PASSWORD_CHECKS, _password_matches, data["password"], stored
        )
        validations = [user.is_authorized, valid]
        if user.has_2fa:
            validations.append(user.is_valid_token(data.get("2fa")))
        if all(validations):
            self.successful_login(username)
            return username
        self.add_login_attempt(username)
        return None

    def add_user(self, user):
        result = super().add_user(user)
        if (
            self.admin_password_file
            and user.name in self.admin_users
            and self.get_user(user.name) is None
        ):
            password, _ = read_or_create_secret(Path(self.admin_password_file))
            if self.create_user(user.name, password) is None:
                raise ValueError(
                    f"could not create the account of admin {user.name!r}: the password in "
                    f"{self.admin_password_file} is rejected by NativeAuthenticator's rules "
                    "(length, common passwords); delete the file to generate a new one"
                )
            self.log.info("Created the account of admin %s", user.name)
        return result


_PASSWORD_CHECKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpulab-bcrypt")


def _password_matches(password: str, stored: bytes) -> bool:
    """What ``UserInfo.is_valid_password`` computes, for a thread."""
    return stored == bcrypt.hashpw(password.encode(), stored)
