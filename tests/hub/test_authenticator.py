"""The bootstrap admin account of GpulabNativeAuthenticator, on a real hub database."""

import pytest
from jupyterhub import orm

from gpulab_hub.authenticator import GpulabNativeAuthenticator


@pytest.fixture
def db():
    session = orm.new_session_factory("sqlite://")()
    yield session
    session.close()


def make_authenticator(db, tmp_path, **config):
    return GpulabNativeAuthenticator(
        _deprecated_db_session=db,
        admin_users={"boss"},
        admin_password_file=str(tmp_path / "admin-password"),
        **config,
    )


def hub_user(db, name):
    user = orm.User(name=name)
    db.add(user)
    db.commit()
    return user


def test_admin_gets_an_approved_account_with_the_stored_password(db, tmp_path):
    authenticator = make_authenticator(db, tmp_path)
    authenticator.add_user(hub_user(db, "boss"))
    password = (tmp_path / "admin-password").read_text().strip()
    info = authenticator.get_user("boss")
    assert info.is_authorized
    assert info.is_valid_password(password)
    assert not info.is_valid_password(password + "x")


def test_other_users_get_no_account(db, tmp_path):
    authenticator = make_authenticator(db, tmp_path)
    authenticator.add_user(hub_user(db, "student"))
    assert authenticator.get_user("student") is None


def test_a_changed_admin_password_survives_a_restart(db, tmp_path):
    authenticator = make_authenticator(db, tmp_path)
    boss = hub_user(db, "boss")
    authenticator.add_user(boss)
    assert authenticator.change_password("boss", "a-new-and-long-password-7")
    make_authenticator(db, tmp_path).add_user(boss)  # the hub starts again
    assert authenticator.get_user("boss").is_valid_password("a-new-and-long-password-7")


def test_a_rejected_stored_password_is_a_clear_error(db, tmp_path):
    (tmp_path / "admin-password").write_text("short\n")
    authenticator = make_authenticator(db, tmp_path, minimum_password_length=10)
    with pytest.raises(ValueError, match="delete the file to generate a new one"):
        authenticator.add_user(hub_user(db, "boss"))
    assert authenticator.get_user("boss") is None


def test_without_a_password_file_admins_sign_up_like_everyone(db, tmp_path):
    authenticator = GpulabNativeAuthenticator(_deprecated_db_session=db, admin_users={"boss"})
    authenticator.add_user(hub_user(db, "boss"))
    assert authenticator.get_user("boss") is None


def test_a_login_checks_the_password_off_the_event_loop(db, tmp_path):
    """While bcrypt runs, the hub's loop keeps serving (it ticks); the answers are
    NativeAuthenticator's: the name for the right password, None otherwise."""
    import asyncio

    authenticator = make_authenticator(db, tmp_path)
    authenticator.add_user(hub_user(db, "boss"))
    password = (tmp_path / "admin-password").read_text().strip()

    async def login(given):
        ticks = 0
        task = asyncio.ensure_future(
            authenticator.authenticate(None, {"username": "Boss", "password": given}))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.001)
        return task.result(), ticks

    name, ticks = asyncio.run(login(password))
    assert name == "boss" and ticks > 1
    assert asyncio.run(login(password + "x"))[0] is None
    assert authenticator.get_user("nobody") is None
    assert asyncio.run(authenticator.authenticate(
        None, {"username": "nobody", "password": password})) is None


def test_logins_at_once_check_passwords_one_at_a_time_in_their_own_thread(
    db, tmp_path, monkeypatch
):
    """Many logins at once take one thread (so at most one core from the hub's loop),
    not the default pool that the quota ledger's calls run in; each still gets its own
    answer."""
    import asyncio
    import threading

    from gpulab_hub import authenticator as module

    authenticator = make_authenticator(db, tmp_path)
    authenticator.add_user(hub_user(db, "boss"))
    password = (tmp_path / "admin-password").read_text().strip()
    seen = []
    active = {"now": 0, "most": 0}
    lock = threading.Lock()
    check = module._password_matches

    def watched(given, stored):
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
            seen.append(threading.current_thread().name)
        try:
            return check(given, stored)
        finally:
            with lock:
                active["now"] -= 1

    monkeypatch.setattr(module, "_password_matches", watched)

    async def logins():
        tries = [password if i % 2 == 0 else password + "x" for i in range(4)]
        return await asyncio.gather(*(
            authenticator.authenticate(None, {"username": "boss", "password": p})
            for p in tries))

    assert asyncio.run(logins()) == ["boss", None, "boss", None]
    assert len(seen) == 4 and all(name.startswith("gpulab-bcrypt") for name in seen)
    assert active["most"] == 1
