"""NativeAuthenticator with a bootstrap admin.

The embedded default has no identity provider: people sign up at /hub/signup and an
admin approves them at /hub/authorize. Someone must be the first admin, so on start the
hub creates the admin's account with the password stored in ``admin_password_file``
(made once, mode 0600, by ``gpulab_hub.secrets``). An existing account is never touched,
so a password the admin changed in the hub stays changed.
"""

from __future__ import annotations

from pathlib import Path

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
