"""Fixtures for end-to-end tests against a real hub, proxy and single-user servers.

- ``hub``: one hub for the whole session, started as ``make run`` starts it (state in a
  temporary folder, a free port); stopped at the end of the session;
- ``admin``: a ``HubSession`` logged in as the hub's admin, with an API token;
- ``browser``: Debian's Chromium driven by Playwright (never a downloaded browser);
- ``page``: a fresh browser page that saves a screenshot under the test's tmp folder
  when the test fails;
- ``gpu_hub`` / ``gpu_admin``: a second hub, on a node with 2 static GPUs
  (``gpu_hub_config.py``: everyone may hold 1 GPU, the admin 2), and its admin with the
  users alice, bob and carol created.
"""

from __future__ import annotations

import shutil

import pytest

from gpulab_hub.ports import free_port
from tests.e2e.harness import RunningHub

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    running = RunningHub.start(tmp_path_factory.mktemp("hub") / "state", free_port())
    yield running
    running.stop()


@pytest.fixture(scope="session")
def admin_password(hub):
    password = hub.printed_admin_password
    assert password, f"the first start printed no admin password:\n{hub.output[-3000:]}"
    return password


@pytest.fixture(scope="session")
def admin(hub, admin_password):
    return hub.admin_session(admin_password)


# Per module, not per session: Playwright's sync API runs an event loop in the main thread
# while it is open, and later tests that run their own loop (asyncio.run, pytest-jupyter)
# would find it running.
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failed page: {path}")
    context.close()


@pytest.fixture(scope="session")
def gpu_hub(tmp_path_factory):
    hub = RunningHub.start_with_config(
        tmp_path_factory.mktemp("gpu-hub") / "state", "gpu_hub_config.py"
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def gpu_admin(gpu_hub):
    session = gpu_hub.admin_session()
    created = session.api("POST", "/users", json={"usernames": ["alice", "bob", "carol"]})
    assert created.status_code == 201, created.text
    return session
