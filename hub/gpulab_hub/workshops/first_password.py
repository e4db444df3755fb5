"""One-time passwords: a workshop student is sent to change theirs at each login until
they have.

NativeAuthenticator has no "must change password" flag, so the workshop keeps, per
student, the bcrypt hash it created the account with (table ``gpulab_first_passwords`` in
the hub's database, written in the same transaction as the account). While the account's
password is still that hash, ``first_login_hook`` (``c.Authenticator.post_auth_hook``)
turns the login's next page into NativeAuthenticator's /hub/change-password. Any change
there gives a new hash (bcrypt salts each one), which ends the redirects. It is a nudge
at every login, not a lock: a student who skips the page can still use the hub, and the
instructor page and the hub's API work as usual.
"""

from __future__ import annotations

from jupyterhub.utils import url_path_join
from nativeauthenticator.orm import UserInfo
from sqlalchemy import Column, LargeBinary, MetaData, Table, Unicode, insert, select

metadata = MetaData()
first_passwords = Table(
    "gpulab_first_passwords",
    metadata,
    Column("username", Unicode(255), primary_key=True),
    Column("password", LargeBinary, nullable=False),
)


def record_first_passwords(db, hashes: dict[str, bytes]) -> None:
    """Keep the accounts' first hashes, in ``db``'s current transaction (the caller
    commits or rolls back with the accounts)."""
    connection = db.connection()
    first_passwords.create(connection, checkfirst=True)
    if hashes:
        connection.execute(
            insert(first_passwords), [{"username": n, "password": h} for n, h in hashes.items()]
        )


def still_first_password(db, username: str) -> bool:
    """Whether ``username`` still logs in with the password the workshop gave them."""
    connection = db.connection()
    if not db.get_bind().dialect.has_table(connection, first_passwords.name):
        return False
    first = connection.execute(
        select(first_passwords.c.password).where(first_passwords.c.username == username)
    ).scalar()
    if first is None:
        return False
    info = UserInfo.find(db, username)
    return info is not None and info.password == first


def first_login_hook(authenticator, handler, authentication):
    """``c.Authenticator.post_auth_hook``: send a student still on their one-time password
    to /hub/change-password after logging in."""
    if authentication and still_first_password(handler.db, authentication["name"]):
        change = url_path_join(handler.hub.base_url, "change-password")
        # The login handler redirects to get_next_url(), which reads the "next" argument.
        handler.request.arguments["next"] = [change.encode()]
    return authentication
