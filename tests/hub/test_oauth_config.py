"""The OAuth/OIDC option: the config as JupyterHub loads it (jupyterhub_config.py plus
``configure_oauth``), and the authenticator's code -> token -> userinfo -> auth model path
against a real OIDC-like provider (tornado, on 127.0.0.1, started here): groups from the
claims, admin and allowed groups, the username normalisation, PKCE checked by the
provider. oauthenticator itself runs unmodified."""

import asyncio
import base64
import hashlib
import json
import secrets
import threading
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.web
from oauthenticator.oauth2 import _serialize_state
from tornado import web
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from gpulab_hub.oauth import GpulabGenericOAuthenticator, OAuthConfigError, configure_oauth

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "gpulab-hub", "s3cret-of-the-hub"
CALLBACK = "http://127.0.0.1:8000/hub/oauth_callback"


class Provider:
    """The token and userinfo endpoints of an OIDC provider, with one-time codes the
    test registers: ``code_for(claims)`` -> (code, PKCE verifier)."""

    def __init__(self):
        self.codes: dict[str, tuple[dict, str]] = {}
        self.tokens: dict[str, dict] = {}
        self.requests: list[dict] = []
        provider = self

        class Token(web.RequestHandler):
            def post(self):
                form = {k: v[0] for k, v in parse_qs(self.request.body.decode()).items()}
                provider.requests.append(form)
                entry = provider.codes.pop(form.get("code", ""), None)
                if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
                    return self._error(401, "invalid_client")
                if entry is None or form.get("redirect_uri") != CALLBACK:
                    return self._error(400, "invalid_grant")
                claims, challenge = entry
                verifier = form.get("code_verifier", "").encode()
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
                if digest.decode() != challenge:
                    return self._error(400, "invalid_grant")
                token = secrets.token_urlsafe(16)
                provider.tokens[token] = claims
                self.write({"access_token": token, "token_type": "Bearer", "expires_in": 300,
                            "scope": "openid profile email"})

            def _error(self, status, error):
                self.set_status(status)
                self.write({"error": error, "error_description": error})

        class UserInfo(web.RequestHandler):
            def get(self):
                scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
                claims = provider.tokens.get(token) if scheme.lower() == "bearer" else None
                if claims is None:
                    raise web.HTTPError(401)
                self.write(json.dumps(claims))

        self.app = tornado.web.Application([(r"/token", Token), (r"/userinfo", UserInfo)])

    def code_for(self, claims: dict) -> tuple[str, str]:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        code = secrets.token_urlsafe(12)
        self.codes[code] = (claims, challenge.rstrip(b"=").decode())
        return code, verifier


@pytest.fixture(scope="module")
def provider():
    """The provider on a free port of 127.0.0.1, in a thread with its own event loop."""
    provider = Provider()
    started = threading.Event()
    state = {}

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        server = tornado.httpserver.HTTPServer(provider.app)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets([sock])
        state["port"], state["loop"] = sock.getsockname()[1], tornado.ioloop.IOLoop.current()
        started.set()
        state["loop"].start()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    provider.url = f"http://127.0.0.1:{state['port']}"
    yield provider
    state["loop"].add_callback(state["loop"].stop)
    thread.join(10)


def environment(provider, **extra):
    return {
        "GPULAB_OAUTH_CLIENT_ID": CLIENT_ID,
        "GPULAB_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "GPULAB_OAUTH_AUTHORIZE_URL": f"{provider.url}/authorize",
        "GPULAB_OAUTH_TOKEN_URL": f"{provider.url}/token",
        "GPULAB_OAUTH_USERDATA_URL": f"{provider.url}/userinfo",
        "GPULAB_OAUTH_CALLBACK_URL": CALLBACK,
        "GPULAB_OAUTH_ALLOWED_GROUPS": "ml101,researchers",
        "GPULAB_OAUTH_ADMIN_GROUPS": "/gpulab-admins",
        **extra,
    }


def hub_config(monkeypatch, tmp_path, environ) -> Config:
    """jupyterhub_config.py as the hub loads it, then the snippet of docs/oauth.md."""
    monkeypatch.setenv("GPULAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GPULAB_PORT", "8123")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    snippet = tmp_path / "oauth_config.py"
    snippet.write_text(
        f"load_subconfig({str(REPO / 'jupyterhub_config.py')!r})\n"
        "from gpulab_hub.oauth import configure_oauth\n"
        "configure_oauth(get_config())\n"
    )
    return PyFileConfigLoader(snippet.name, path=str(tmp_path)).load_config()


@pytest.fixture(scope="module")
def authenticator(provider, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        config = hub_config(mp, tmp_path_factory.mktemp("oauth"), environment(provider))
    finally:
        mp.undo()
    return GpulabGenericOAuthenticator(config=config)


class CallbackRequest:
    """What oauthenticator asks of the hub's callback handler: the code argument and the
    state cookie (holding the PKCE verifier), as JupyterHub's OAuthCallbackHandler has
    them after the provider redirected back."""

    def __init__(self, code: str, verifier: str):
        self.code, self.state = code, _serialize_state({"state_id": "x", "code_verifier": verifier})

    def get_argument(self, name, default=None):
        return self.code if name == "code" else default

    def get_state_cookie(self):
        return self.state


def log_in(authenticator, provider, claims):
    handler = CallbackRequest(*provider.code_for(claims))
    return asyncio.run(authenticator.get_authenticated_user(handler, None))


def test_the_config_selects_gpulab_oauth_with_the_variables(monkeypatch, tmp_path, provider):
    c = hub_config(monkeypatch, tmp_path, environment(provider))
    assert c.JupyterHub.authenticator_class == "gpulab-oauth"
    [entry] = entry_points(group="jupyterhub.authenticators", name="gpulab-oauth")
    assert entry.load() is GpulabGenericOAuthenticator
    auth = GpulabGenericOAuthenticator(config=c)
    assert (auth.client_id, auth.token_url) == (CLIENT_ID, f"{provider.url}/token")
    assert auth.allowed_groups == {"ml101", "researchers"}
    assert auth.admin_groups == {"gpulab-admins"}
    assert auth.manage_groups and not auth.allow_all
    assert auth.admin_users == set()  # the embedded default's "admin" is not carried over
    assert auth.username_claim == "preferred_username"
    assert auth.auth_state_groups_key == "oauth_user.groups"
    assert auth.post_auth_hook is None  # the workshops' one-time password hook is native's


def test_without_a_client_id_nothing_changes(monkeypatch, tmp_path):
    c = Config()
    assert configure_oauth(c, {}) is False and c == Config()
    c = hub_config(monkeypatch, tmp_path, {})
    assert c.JupyterHub.authenticator_class == "gpulab-native"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"GPULAB_OAUTH_TOKEN_URL": ""}, "OAuth login needs GPULAB_OAUTH_TOKEN_URL"),
        ({"GPULAB_OAUTH_USERDATA_URL": "ftp://x"}, "GPULAB_OAUTH_USERDATA_URL must be an http"),
        ({"GPULAB_OAUTH_ADMIN_USERS": "ok,bad name"}, "GPULAB_OAUTH_ADMIN_USERS: username"),
    ],
)
def test_bad_variables_are_named(provider, changes, message):
    c = Config()
    with pytest.raises(OAuthConfigError, match=message):
        configure_oauth(c, environment(provider, **changes))
    assert "authenticator_class" not in c.JupyterHub


def test_groups_come_from_the_claims_and_names_are_normalised(authenticator, provider):
    model = log_in(authenticator, provider, {
        "preferred_username": "Ａｌｉｃｅ", "groups": ["/ml101", "physics", 7, ""],
    })
    assert model["name"] == "alice"
    assert model["groups"] == ["ml101", "physics"]
    assert not model["admin"]
    assert model["auth_state"]["oauth_user"]["preferred_username"] == "Ａｌｉｃｅ"
    # PKCE: the verifier of the state cookie reached the provider.
    assert provider.requests[-1]["code_verifier"]


def test_admin_groups_make_admins_and_other_users_are_refused(authenticator, provider):
    admin = log_in(authenticator, provider, {"preferred_username": "Root",
                                             "groups": ["gpulab-admins"]})
    assert (admin["name"], admin["admin"]) == ("root", True)
    # Named "admin" at the provider is no admin here, and without an allowed group no user.
    assert log_in(authenticator, provider, {"preferred_username": "Admin",
                                            "groups": ["staff"]}) is None
    assert log_in(authenticator, provider, {"preferred_username": "bob"}) is None


@pytest.mark.parametrize("name", ["alice\u200b", "\u0430lice", "a/b", ""])
def test_unsafe_usernames_from_the_provider_are_refused(authenticator, provider, name):
    claims = {"preferred_username": name, "groups": ["ml101"]}
    if not name:
        with pytest.raises(ValueError, match="No preferred_username"):
            log_in(authenticator, provider, claims)
    else:
        assert log_in(authenticator, provider, claims) is None
