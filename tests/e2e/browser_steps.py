"""Steps the browser and hub tests share: logging in through the hub's form, waiting for
a server to be ready, the admin's one-GPU server under a Dask-worker limit, and reading
what a page shows (the points a Bokeh plot draws, its texts inside shadow roots)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests


def log_in(page, hub_url: str, name: str, password: str, landing=None) -> None:
    """The hub's login form, as a person fills it; returns once the browser has left the
    login page (or reached ``landing``, a URL pattern for Playwright's wait_for_url)."""
    page.goto(f"{hub_url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(landing or (lambda url: "/hub/login" not in url), timeout=120_000)


def wait_ready(admin, name: str, timeout: float = 120) -> dict:
    """``name``'s default server as the hub's API shows it once ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = admin.api("GET", f"/users/{name}").json()["servers"].get("")
        if server and server["ready"]:
            return server
        time.sleep(0.5)
    raise AssertionError(f"the server of {name} was not ready in {timeout}s")


@contextmanager
def admin_at_a_gpu_server(hub, admin, page, max_dask_workers: int) -> Iterator[None]:
    """The admin's server with one GPU, limited to ``max_dask_workers`` by the quota
    service, and the browser logged in to it. On failure the browser's console is
    printed; at the end the server stops and the admin's policy is cleared."""
    quota = f"{hub.url}/services/gpulab-quota/api/policies/users/admin"
    token = {"Authorization": f"token {admin.token}"}
    limit = requests.put(quota, json={"max_dask_workers": max_dask_workers}, headers=token,
                         timeout=30)
    assert limit.status_code == 200, limit.text
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    try:
        spawn = admin.api("POST", "/users/admin/server", json={"gpus": 1})
        assert spawn.status_code in (201, 202), spawn.text
        wait_ready(admin, "admin")
        log_in(page, hub.url, "admin", hub.printed_admin_password,
               landing=re.compile(r"/user/admin/"))
        yield
    except BaseException:
        print("browser console:\n" + "\n".join(console[-40:]))
        raise
    finally:
        admin.api("DELETE", "/users/admin/server")
        requests.put(quota, json={}, headers=token, timeout=30)


# The largest x of every line's data source in the page's Bokeh document (the curves live
# in Panel's shadow DOM; Bokeh's models are the reliable place to read them).
BOKEH_LAST_STEPS = """() => {
  const doc = window.Bokeh && window.Bokeh.documents[0];
  if (!doc) return [];
  const found = [];
  for (const model of doc.all_models) {
    if (model.type === 'ColumnDataSource' && model.data.x && model.data.x.length) {
      found.push(Math.max(...Array.from(model.data.x)));
    }
  }
  return found;
}"""


# Every leaf text and every <img> of the page, shadow roots included.
PAGE_TEXTS = """() => {
  const texts = [];
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.shadowRoot) walk(el.shadowRoot);
    if (el.tagName === 'IMG') texts.push('IMG:' + el.getAttribute('src'));
    if (el.childElementCount === 0 && el.textContent) texts.push(el.textContent);
  });
  walk(document);
  return texts;
}"""
