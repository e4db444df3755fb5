"""gpulab's one username normalisation, used by every authenticator and by bulk account
creation, so allow-lists, admin lists and group memberships can't be bypassed by case or
Unicode tricks (the class of oauthenticator's and firstuseauthenticator's CVEs, where
"Admin" or a fullwidth "ａｄｍｉｎ" was a different user than "admin" to one check and the
same to another).

The rule, in order:

1. NFKC: compatibility forms become their plain letters (fullwidth "ａ" -> "a", the
   Kelvin sign "K" -> "K", ligature "ﬁ" -> "fi", long s "ſ" -> "s");
2. casefold (a stronger lower(): "ß" -> "ss"), then NFKC again (casefold can produce
   non-normalised text);
3. strip surrounding whitespace;
4. what is left must be 1 to 128 characters of ``a-z 0-9 . _ - @``, starting with a letter
   or a digit, and not end in "."; anything else is refused with a message that names the
   first offending character (an invisible U+200B, a Cyrillic "а" that looks Latin ...).

Why ASCII only: usernames become URL paths (/user/NAME), folder names and Dask/Unix
names, and a name that mixes scripts or carries invisible characters is how one user
impersonates another. Whole-script look-alikes ("аdmin" with a Cyrillic "а") can't be
told apart from a real name in another script without Unicode's confusables data, so
non-ASCII letters are refused rather than guessed at: identity providers give an ASCII
``preferred_username`` or e-mail address (the OAuth option's ``username_claim``).
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 128
_SAFE = re.compile(r"[a-z0-9][a-z0-9._@-]*")
_ALLOWED = set("abcdefghijklmnopqrstuvwxyz0123456789._@-")


class UsernameError(ValueError):
    """A name that can't be a gpulab username; the message says why and what to use."""

    field = "username"


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    shown = char if char.isprintable() and not char.isspace() else ""
    what = f"{name.lower()}" if name else "an unnamed character"
    return f"U+{ord(char):04X} ({what}{f' {shown!r}' if shown else ''})"


def normalize_username(name: object) -> str:
    """The canonical form of ``name`` (see the module docstring); ``UsernameError`` when
    there is none."""
    if not isinstance(name, str):
        raise UsernameError(f"a username must be text, not {type(name).__name__}")
    text = unicodedata.normalize("NFKC", name)
    text = unicodedata.normalize("NFKC", text.casefold()).strip()
    if not text:
        raise UsernameError("a username must not be empty")
    if len(text) > MAX_LENGTH:
        raise UsernameError(f"a username must be at most {MAX_LENGTH} characters, not {len(text)}")
    bad = next((c for c in text if c not in _ALLOWED), None)
    if bad is not None:
        raise UsernameError(
            f"username {name!r:.80} contains {_describe(bad)}: use only letters a-z, digits "
            "and . _ - @ (names with other scripts, spaces or invisible characters are "
            "refused so that no name can pass for another)"
        )
    if not _SAFE.fullmatch(text) or text.endswith("."):
        raise UsernameError(
            f"username {name!r:.80} must start with a letter or digit and not end with '.'"
        )
    return text


def is_normalized(name: object) -> bool:
    """Whether ``name`` is already a canonical username."""
    try:
        return normalize_username(name) == name
    except UsernameError:
        return False


class NormalizedUsernames:
    """Mix into a JupyterHub authenticator (before it): every name it sees (logins,
    sign-ups, ``admin_users``, ``allowed_users``, the REST API's new users) goes through
    :func:`normalize_username`, then ``username_map``.

    A name with no canonical form comes back unchanged from ``normalize_username`` (so
    JupyterHub's flow goes on) and ``validate_username`` refuses it: a login is denied
    with "invalid username" in the log, a bad name in ``admin_users`` stops the hub.
    """

    def normalize_username(self, username):
        try:
            name = normalize_username(username)
        except UsernameError as e:
            self.log.warning("Refused username: %s", e)
            return username
        return self.username_map.get(name, name)

    def validate_username(self, username):
        return is_normalized(username) and super().validate_username(username)
