"""One username normalisation: the CVE classes (case, fullwidth, invisible characters,
compatibility letters, look-alike scripts) map to the same user or are refused, in the
function and through GpulabNativeAuthenticator on a real hub database."""

import asyncio

import pytest
from jupyterhub import orm

from gpulab_hub.authenticator import GpulabNativeAuthenticator
from gpulab_hub.usernames import UsernameError, is_normalized, normalize_username

PASSWORD = "a-long-enough-passphrase-9"


@pytest.mark.parametrize(
    "name",
    [
        "admin",
        "Admin",
        "ADMIN",
        "  admin ",
        "ａｄｍｉｎ",  # fullwidth letters
        "ＡＤＭＩＮ",
        "\u1d2c\u1d30\u1d39\u1d35\u1d3a",  # modifier capitals: ᴬᴰᴹᴵᴺ
        "admin\u00a0",  # a no-break space at the end is whitespace after NFKC
    ],
)
def test_look_alikes_of_admin_are_admin(name):
    assert normalize_username(name) == "admin"


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("\u212aelvin", "kelvin"),  # the Kelvin sign
        ("Kelvin", "kelvin"),
        ("\u017fam", "sam"),  # long s
        ("stra\u00dfe", "strasse"),  # casefold, not lower()
        ("\ufb01sh", "fish"),  # the fi ligature
        ("alice@example.org", "alice@example.org"),
        ("Jo.Smith-2_x", "jo.smith-2_x"),
        ("０７ｂｏｂ", "07bob"),
    ],
)
def test_compatibility_forms_map_to_plain_names(name, normal):
    assert normalize_username(name) == normal
    assert is_normalized(normal) and not (name != normal and is_normalized(name))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("admin\u200b", r"U\+200B \(zero width space\)"),
        ("ad\u200dmin", r"U\+200D \(zero width joiner\)"),
        ("\u0430dmin", r"U\+0430 \(cyrillic small letter a 'а'\)"),  # Cyrillic а
        ("adm\u0131n", r"U\+0131 \(latin small letter dotless i"),  # Turkish ı
        ("admin\u0334", r"U\+0334"),  # a combining overlay that has no composed form
        ("jos\u00e9", r"latin small letter e with acute"),
        ("a b", r"U\+0020 \(space\)"),
        ("a/b", r"solidus"),
        ("..x", r"must start with a letter or digit"),
        ("x.", r"not end with '.'"),
        ("-x", r"must start with a letter or digit"),
        ("", r"must not be empty"),
        ("   ", r"must not be empty"),
        ("a" * 129, r"at most 128 characters"),
        (None, r"must be text"),
    ],
)
def test_unsafe_names_are_refused_with_the_reason(name, message):
    with pytest.raises(UsernameError, match=message):
        normalize_username(name)
    assert not is_normalized(name)


@pytest.fixture(scope="module")
def authenticator():
    """An allow-list of one (``admin``, spelt as an operator might), with its account."""
    db = orm.new_session_factory("sqlite://")()
    auth = GpulabNativeAuthenticator(_deprecated_db_session=db)
    # What the hub does at start: every configured name through normalize_username.
    auth.allowed_users = {auth.normalize_username(n) for n in ("Admin", "ＥＶＥ")}
    auth.create_user("admin", PASSWORD)
    auth.get_user("admin").is_authorized = True
    db.commit()
    yield auth
    db.close()


def login(auth, name, password=PASSWORD):
    data = {"username": name, "password": password}
    result = asyncio.run(auth.get_authenticated_user(None, data))
    return None if result is None else result["name"]


def test_the_allow_list_is_normalised_like_logins(authenticator):
    assert authenticator.allowed_users == {"admin", "eve"}
    for name in ("admin", "Admin", "ａｄｍｉｎ", "\u1d2c\u1d30\u1d39\u1d35\u1d3a"):
        assert login(authenticator, name) == "admin", name


def test_tricks_never_log_in(authenticator):
    for name in ("admin\u200b", "\u0430dmin", "adm\u0131n", "admin/x"):
        assert login(authenticator, name) is None, name
        assert not authenticator.validate_username(authenticator.normalize_username(name))


def test_sign_up_under_a_spelling_of_an_existing_name_is_refused(authenticator):
    assert authenticator.create_user("ＡＤＭＩＮ", "another-long-passphrase-1") is None
    assert authenticator.create_user("admin\u200b", "another-long-passphrase-1") is None
    created = authenticator.create_user("\u212aarl", "another-long-passphrase-1")
    assert created is not None and created.username == "karl"
    assert authenticator.get_user("KARL").username == "karl"


def test_username_map_applies_after_normalisation():
    auth = GpulabNativeAuthenticator(
        _deprecated_db_session=orm.new_session_factory("sqlite://")(),
        username_map={"ada": "ada.lovelace"},
    )
    assert auth.normalize_username("ＡＤＡ") == "ada.lovelace"
    assert auth.validate_username("ada.lovelace")
    assert not auth.validate_username("Ada")  # not canonical: a bypass attempt
