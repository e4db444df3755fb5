"""Workshop creation over a real JupyterHub database, NativeAuthenticator and quota ledger:
all or nothing, bad rows listed with nothing created, settings named when wrong."""

from __future__ import annotations

import asyncio

import pytest
from jupyterhub import orm, roles
from nativeauthenticator.orm import UserInfo

from gpulab_hub.authenticator import GpulabNativeAuthenticator
from gpulab_hub.quota import GpulabQuota
from gpulab_hub.workshops import accounts
from gpulab_hub.workshops.accounts import (
    WorkshopError,
    commit_workshop,
    create_workshop,
    plan_workshop,
)
from gpulab_hub.workshops.first_password import still_first_password


@pytest.fixture
def hub_db():
    db = orm.new_session_factory("sqlite://")()
    for role in roles.get_default_roles():
        roles.create_role(db, role)
    for name in ("alice", "bob", "zoe"):
        db.add(orm.User(name=name))
    db.commit()
    yield db
    db.close()


@pytest.fixture
def authenticator(hub_db):
    return GpulabNativeAuthenticator(db=hub_db, minimum_password_length=10)


@pytest.fixture
def quota(tmp_path):
    quota = GpulabQuota(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", static_gpus=2)
    yield quota
    quota.ledger.close()


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch):
    # bcrypt's default cost takes ~0.25 s a hash on this machine; the cost is not what
    # these tests are about.
    import bcrypt

    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=4, prefix=b"2b": _gensalt(4, prefix))


_gensalt = __import__("bcrypt").gensalt


def request(**overrides):
    body = {
        "name": "dl101",
        "students_csv": "username\nAda\nbo\ncy\n",
        "instructors": ["alice"],
        "profiles": ["cpu", "1-gpu"],
        "quota": {"max_gpus": 1, "gpu_hours": 2, "window": "1d"},
        "course_dir": None,
    }
    body.update(overrides)
    return body


def snapshot(db, quota):
    return (
        sorted(u.name for u in db.query(orm.User)),
        sorted(g.name for g in db.query(orm.Group)),
        sorted(r.name for r in db.query(orm.Role)),
        sorted(i.username for i in db.query(UserInfo)),
        quota.ledger.policy_overrides(),
    )


def test_create_makes_the_group_accounts_role_and_policy(hub_db, authenticator, quota, tmp_path):
    result = asyncio.run(
        create_workshop(hub_db, authenticator, quota, request(course_dir=str(tmp_path)), "ops")
    )
    assert [s["username"] for s in result["students"]] == ["ada", "bo", "cy"]
    assert len({s["password"] for s in result["students"]}) == 3
    group = orm.Group.find(hub_db, "dl101")
    assert sorted(u.name for u in group.users) == ["ada", "bo", "cy"]
    settings = group.properties["gpulab_workshop"]
    assert settings["instructors"] == ["alice"]
    assert settings["profiles"] == ["cpu", "1-gpu"]
    assert settings["course_dir"] == str(tmp_path)
    role = orm.Role.find(hub_db, "instructor-dl101")
    assert [u.name for u in role.users] == ["alice"]
    assert all(scope.endswith("!group=dl101") for scope in role.scopes)
    assert not any(s.startswith(("admin", "groups", "users", "roles")) for s in role.scopes)
    ada = orm.User.find(hub_db, "ada")
    assert [r.name for r in ada.roles] == ["user"]
    info = UserInfo.find(hub_db, "ada")
    assert info.is_authorized and info.is_valid_password(result["students"][0]["password"])
    # Until ada changes the one-time password, each login sends her to change it.
    assert still_first_password(hub_db, "ada") and still_first_password(hub_db, "bo")
    assert authenticator.change_password("ada", "my-own-password-7")
    assert not still_first_password(hub_db, "ada") and still_first_password(hub_db, "bo")
    assert not still_first_password(hub_db, "alice")  # not a workshop account
    policy = quota.policy_for("ada", ["dl101"])
    assert policy.profiles == frozenset({"cpu", "1-gpu"}) and policy.max_gpus == 1
    assert result["policy"]["gpu_hours"] == 2.0


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"name": "DL 101"}, "name", "name must be"),
        ({"instructors": ["nobody"]}, "instructors", "'nobody' is not a user of this hub"),
        ({"instructors": []}, "instructors", "instructors must be a non-empty list"),
        ({"instructors": ["a\u200bb"]}, "instructors", "is not a user of this hub"),
        ({"profiles": ["8-gpus"]}, "profiles", "not offered on this hub"),
        ({"quota": {"max_gpus": -1}}, "quota.max_gpus", "quota.max_gpus must be"),
        ({"quota": {"max_gpu": 1}}, "quota", "did you mean 'max_gpus'"),
        ({"course_dir": "relative/path"}, "course_dir", "absolute path"),
        ({"course_dir": "/no/such/folder"}, "course_dir", "not a folder"),
        ({"extra": 1}, "extra", "unknown fields"),
        ({"students_csv": "username\nzoe\nbad name\nBo\nbo\n"}, "students_csv", "line 2"),
    ],
)
def test_bad_requests_name_the_field_and_create_nothing(
    hub_db, authenticator, quota, overrides, field, message
):
    before = snapshot(hub_db, quota)
    with pytest.raises(WorkshopError, match=message) as caught:
        asyncio.run(create_workshop(hub_db, authenticator, quota, request(**overrides), "ops"))
    assert caught.value.field == field
    assert snapshot(hub_db, quota) == before


def test_bad_rows_are_all_listed(hub_db, authenticator, quota):
    body = request(students_csv="username\nzoe\nbad name\nBo\nbo\nok\n")
    with pytest.raises(WorkshopError) as caught:
        plan_workshop(hub_db, authenticator, quota, body)
    assert caught.value.rows == [
        {"line": 2, "message": "'zoe' is an existing user"},
        {"line": 3, "message": caught.value.rows[1]["message"]},
        {"line": 5, "message": "'bo' duplicates line 4"},
    ]
    assert "'bad name'" in caught.value.rows[1]["message"]


def test_an_existing_group_or_a_signed_up_name_is_refused(hub_db, authenticator, quota):
    authenticator.create_user("dee", "a-long-password-1")  # signed up, not yet approved
    with pytest.raises(WorkshopError) as caught:
        plan_workshop(hub_db, authenticator, quota, request(students_csv="username\nDee\n"))
    assert caught.value.rows == [{"line": 2, "message": "'Dee' (as 'dee') is an existing user"}]
    hub_db.add(orm.Group(name="dl101"))
    hub_db.commit()
    with pytest.raises(WorkshopError, match="a group named 'dl101' exists") as caught:
        plan_workshop(hub_db, authenticator, quota, request())
    assert caught.value.status_code == 409


def test_a_commit_that_fails_leaves_nothing_behind(hub_db, authenticator, quota):
    plan = plan_workshop(hub_db, authenticator, quota, request())
    quota.set_policy("group", "dl101", {"max_gpus": 3}, actor="ops")
    # Between the check and the commit, someone takes the name "cy".
    hub_db.add(orm.User(name="cy"))
    hub_db.commit()
    before = snapshot(hub_db, quota)
    with pytest.raises(WorkshopError, match="nothing was created") as caught:
        commit_workshop(hub_db, quota, plan, [b"x"] * 3, actor="ops")
    assert caught.value.status_code == 409
    assert snapshot(hub_db, quota) == before
    assert quota.ledger.policy_overrides()["groups"] == {"dl101": {"max_gpus": 3}}
    assert not still_first_password(hub_db, "ada")  # no first-password row either


def test_one_time_passwords_pass_the_hubs_password_rules(authenticator):
    password = accounts.new_password()
    assert len(password) == accounts.PASSWORD_LENGTH
    assert authenticator.is_password_strong(password)
