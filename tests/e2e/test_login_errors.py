"""Bad input at the login and sign-up forms gets the hub's normal message, never a 500."""

import pytest

from tests.e2e.harness import HubSession

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "not-the-password"), ("nobody-here", "whatever-password"), ("", "")],
    ids=["wrong-password", "unknown-user", "empty"],
)
def test_failed_login_shows_the_login_page_with_a_message(hub, username, password):
    session = HubSession(hub.url)
    response = session.login(username, password)
    assert response.status_code < 500
    assert "Invalid username or password." in response.text
    # Not logged in: the hub's home still sends this browser to the login page.
    home = session.http.get(f"{hub.url}/hub/home", allow_redirects=False, timeout=30)
    assert home.status_code == 302
    assert "/hub/login" in home.headers["Location"]


def test_login_before_approval_says_the_account_awaits_an_admin(hub, admin):
    visitor = HubSession(hub.url)
    visitor.http.get(f"{hub.url}/hub/signup", timeout=30).raise_for_status()
    signup = visitor.http.post(
        f"{hub.url}/hub/signup",
        data={
            "username": "newcomer",
            "signup_password": "a-long-enough-secret-9",
            "signup_password_confirmation": "a-long-enough-secret-9",
            "_xsrf": visitor.http.cookies.get("_xsrf"),
        },
        timeout=30,
    )
    assert signup.status_code == 200, signup.text[:2000]
    assert "information has been sent to the admin" in signup.text

    response = HubSession(hub.url).login("newcomer", "a-long-enough-secret-9")
    assert response.status_code == 200
    assert "has not been authorized by an administrator yet" in response.text
    # Still unapproved: the hub has no user of that name and no server for it.
    assert admin.api("GET", "/users/newcomer").status_code == 404


def test_signup_with_mismatched_passwords_is_refused_with_a_message(hub):
    visitor = HubSession(hub.url)
    visitor.http.get(f"{hub.url}/hub/signup", timeout=30).raise_for_status()
    signup = visitor.http.post(
        f"{hub.url}/hub/signup",
        data={
            "username": "mismatch",
            "signup_password": "a-long-enough-secret-9",
            "signup_password_confirmation": "another-long-secret-9",
            "_xsrf": visitor.http.cookies.get("_xsrf"),
        },
        timeout=30,
    )
    assert signup.status_code == 200
    assert "Your password did not match the confirmation" in signup.text
