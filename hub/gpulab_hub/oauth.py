"""Log in through an OAuth 2 / OpenID Connect identity provider instead of the embedded
NativeAuthenticator: oauthenticator's ``GenericOAuthenticator`` with gpulab's username
normalisation and JupyterHub groups taken from the provider's claims.

``GpulabGenericOAuthenticator`` (alias ``gpulab-oauth``) differs from its base in:

- usernames: :mod:`gpulab_hub.usernames` (NFKC, casefold, a safe ASCII set), the same rule
  as the native logins and the workshop tools, so "Alice" at the provider is the hub's
  "alice" and an allow-list can't be side-stepped by case or Unicode look-alikes;
- ``username_claim`` defaults to ``preferred_username`` (OIDC's), not ``username``;
- groups: ``manage_groups`` is on and the groups come from the userinfo claim named by
  ``auth_state_groups_key`` (default ``oauth_user.groups``; ``claim_groups_key`` is its
  pre-17.0 spelling). Keycloak's full paths ("/ml101") lose their leading "/". JupyterHub
  then makes the user's groups exactly those at each login, so group quotas, workshop
  reservations and course material follow the provider;
- ``allow_all`` is False: who may log in is ``allowed_users``, ``allowed_groups`` or an
  admin (``admin_users``, ``admin_groups``).

``configure_oauth(c)`` sets all of it from ``GPULAB_OAUTH_*`` environment variables (see
``OAUTH_ENV`` and docs/oauth.md); it also empties ``admin_users``, since the embedded
default's "admin" would otherwise be whoever registers "admin" at the provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from oauthenticator.generic import GenericOAuthenticator
from traitlets import default

from gpulab_hub.usernames import NormalizedUsernames, UsernameError, normalize_username

AUTHENTICATOR_ALIAS = "gpulab-oauth"

# Environment variable -> (what it sets, required?)
OAUTH_ENV = {
    "GPULAB_OAUTH_CLIENT_ID": ("client_id", True),
    "GPULAB_OAUTH_CLIENT_SECRET": ("client_secret", True),
    "GPULAB_OAUTH_AUTHORIZE_URL": ("authorize_url", True),
    "GPULAB_OAUTH_TOKEN_URL": ("token_url", True),
    "GPULAB_OAUTH_USERDATA_URL": ("userdata_url", True),
    "GPULAB_OAUTH_CALLBACK_URL": ("oauth_callback_url", True),
    "GPULAB_OAUTH_SCOPES": ("scope", False),  # space-separated; default "openid profile email"
    "GPULAB_OAUTH_USERNAME_CLAIM": ("username_claim", False),  # default preferred_username
    "GPULAB_OAUTH_GROUPS_CLAIM": ("auth_state_groups_key", False),  # default groups
    "GPULAB_OAUTH_ALLOWED_GROUPS": ("allowed_groups", False),  # comma-separated
    "GPULAB_OAUTH_ADMIN_GROUPS": ("admin_groups", False),  # comma-separated
    "GPULAB_OAUTH_ADMIN_USERS": ("admin_users", False),  # comma-separated
}


class OAuthConfigError(ValueError):
    """An OAuth setting is missing or wrong; the message names the variable."""


def group_name(claim: object) -> str | None:
    """A JupyterHub group name from one value of the groups claim (None: not a group)."""
    if not isinstance(claim, str):
        return None
    name = claim.strip().lstrip("/").strip()
    return name or None


class GpulabGenericOAuthenticator(NormalizedUsernames, GenericOAuthenticator):
    """GenericOAuthenticator with gpulab's usernames and groups from the provider."""

    @default("username_claim")
    def _username_claim_default(self):
        return "preferred_username"

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self):
        return f"{self.user_auth_state_key}.groups"

    @default("allow_all")
    def _allow_all_default(self):
        return False

    @default("scope")
    def _scope_default(self):
        return ["openid", "profile", "email"]

    async def get_user_groups(self, auth_state: dict):
        groups = await super().get_user_groups(auth_state)
        return {name for name in map(group_name, groups) if name}


def _names(variable: str, text: str, *, users: bool = False) -> set[str]:
    names = set()
    for item in text.split(","):
        if not item.strip():
            continue
        if users:
            try:
                names.add(normalize_username(item))
            except UsernameError as e:
                raise OAuthConfigError(f"{variable}: {e}") from None
        else:
            name = group_name(item)
            if name:
                names.add(name)
    return names


def configure_oauth(c, environ: Mapping[str, str] | None = None) -> bool:
    """Switch config ``c`` to ``gpulab-oauth`` from the ``GPULAB_OAUTH_*`` variables of
    ``environ`` (default: the process environment). Returns False, changing nothing, when
    ``GPULAB_OAUTH_CLIENT_ID`` is unset; raises :class:`OAuthConfigError` naming the
    variable when a required one is missing or a value is wrong."""
    environ = os.environ if environ is None else environ
    if not environ.get("GPULAB_OAUTH_CLIENT_ID"):
        return False
    missing = [name for name, (_, needed) in OAUTH_ENV.items() if needed and not environ.get(name)]
    if missing:
        raise OAuthConfigError(
            f"OAuth login needs {', '.join(missing)} (GPULAB_OAUTH_CLIENT_ID is set); "
            "see docs/oauth.md"
        )
    auth = c.GpulabGenericOAuthenticator
    for name, (trait, _) in OAUTH_ENV.items():
        value = environ.get(name, "").strip()
        if not value:
            continue
        if trait.endswith("_url") and not value.startswith(("https://", "http://")):
            raise OAuthConfigError(f"{name} must be an http(s) URL, not {value!r}")
        if trait == "scope":
            auth.scope = value.split()
        elif trait == "auth_state_groups_key":
            auth.auth_state_groups_key = f"oauth_user.{value}"
        elif trait in ("allowed_groups", "admin_groups", "admin_users"):
            setattr(auth, trait, _names(name, value, users=trait == "admin_users"))
        else:
            setattr(auth, trait, value)
    c.JupyterHub.authenticator_class = AUTHENTICATOR_ALIAS
    # Workshop one-time passwords belong to NativeAuthenticator accounts (its
    # change-password page); an OAuth login has no hub password, so that hook is off.
    hook = c.Authenticator.get("post_auth_hook")
    if getattr(hook, "__module__", "") == "gpulab_hub.workshops.first_password":
        auth.post_auth_hook = None
    if "admin_users" not in auth:
        auth.admin_users = set()
    auth.allow_all = False
    return True
