"""Steps the browser and hub tests share: logging in through the hub's form, waiting for
a server to be ready, and reading the points a Bokeh plot draws."""

from __future__ import annotations

import time


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
