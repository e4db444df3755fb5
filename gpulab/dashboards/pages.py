"""The pages of the hub's dashboards service, as Panel apps and HTML, without the hub.

The service (``gpulab_hub.dashboards_service``) authenticates the viewer, decides who may
see what, and hands each page a ``Grant``: who is looking (a hub user and their groups, or
a view-only link token) at which run. Everything here checks access only through
``RunStore.viewable`` with that grant, so "missing" and "forbidden" stay one answer.

- ``Grant.check(store)``: the run, or ``RunNotFound`` (re-read at every call: an unshare or
  a revoked link counts at the next check); a grant may also carry ``instructs``, the
  service's answer to "does this viewer instruct a workshop the owner is in" (asked at
  every check too, so a closed workshop counts at the next one);
- ``find_link(store, token)``: which run a link token opens (a scan of the runs' ACLs,
  remembered per token; ``viewable`` still decides whether the link is live);
- ``GuardedRunView``: ``RunView`` that re-checks its grant before every refresh and, once
  refused, stops and shows the "not found" text instead of the run;
- ``GuardedCompareView``: the same for ``CompareView`` (every run it compares);
- ``index_html``: the service's landing page (the viewer's runs, runs shared with them and,
  for an instructor, their students' runs).

Every run name, owner, id and config value shown is escaped here.
"""

from __future__ import annotations

import hmac
import html
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import panel as pn

from gpulab.dashboards import urls
from gpulab.dashboards.compare import CompareData, CompareView
from gpulab.dashboards.data import RunData
from gpulab.dashboards.views import RunView
from gpulab.runs import Manifest, Run, RunNotFound, RunStore
from gpulab.runs import acl as acls
from gpulab.runs.ids import OWNER_PATTERN, RUN_ID_PATTERN

NOT_FOUND_TEXT = "No such run, or you may not view it."
NOT_FOUND_HTML = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Not found</title></head>"
    f"<body><h1>404: not found</h1><p>{NOT_FOUND_TEXT}</p></body></html>"
)
GONE_TEXT = "This dashboard is no longer available to you (access was revoked)."


# instructs(viewer, owner): whether ``viewer`` instructs a workshop ``owner`` is in, now.
Instructs = Callable[[str, str], bool]


@dataclass(frozen=True)
class Grant:
    """A viewer of one run: a hub ``user`` with ``groups``, or a link ``token``.

    ``instructs`` (hub users only) adds one way in besides the run's ACL: the viewer
    instructs a workshop the owner is a member of; it gives read-only access to the
    owner's runs, as a share would."""

    owner: str
    run_id: str
    user: str | None = None
    groups: tuple[str, ...] = field(default_factory=tuple)
    token: str | None = None
    instructs: Instructs | None = field(default=None, compare=False, repr=False)

    def check(self, store: RunStore) -> Run:
        """The run if this viewer may view it now; ``RunNotFound`` otherwise."""
        try:
            return store.viewable(self.owner, self.run_id, self.user, self.groups, self.token)
        except RunNotFound:
            if not self._instructs_owner():
                raise
        # The owner's own view of it: the same RunNotFound if it is missing or malformed.
        return store.viewable(self.owner, self.run_id, self.owner)

    def _instructs_owner(self) -> bool:
        return (self.instructs is not None and bool(self.user) and self.user != self.owner
                and self.instructs(self.user, self.owner))

    def allowed(self, store: RunStore) -> bool:
        try:
            self.check(store)
        except RunNotFound:
            return False
        return True


class _LinkIndex:
    """Token hash -> (owner, run_id), found by scanning the ACLs and kept (a token names
    one run forever; whether it still opens it is ``viewable``'s question)."""

    def __init__(self, size: int = 4096):
        self._found: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def find(self, store: RunStore, token: str) -> tuple[str, str] | None:
        wanted = acls.hash_token(token)
        with self._lock:
            if wanted in self._found:
                return self._found[wanted]
        root = store.root
        for owner in root.names():
            if not OWNER_PATTERN.fullmatch(owner):
                continue
            for run_id in root.child(owner).names():
                if not RUN_ID_PATTERN.fullmatch(run_id):
                    continue
                folder = root.child(owner).child(run_id)
                try:
                    if not folder.exists(acls.ACL):
                        continue
                    acl = acls.read_acl(folder, owner, strict=False)
                except OSError:
                    continue
                for link in acl.links:
                    if hmac.compare_digest(str(link.get("token_hash", "")), wanted):
                        with self._lock:
                            self._found[wanted] = (owner, run_id)
                            while len(self._found) > self._size:
                                self._found.popitem(last=False)
                        return owner, run_id
        return None


_links = _LinkIndex()


def find_link(store: RunStore, token: str) -> Grant | None:
    """The grant a view-only link ``token`` stands for (None if no run has it)."""
    if not isinstance(token, str) or not 20 <= len(token) <= 128:
        return None
    found = _links.find(store, token)
    if found is None:
        return None
    return Grant(owner=found[0], run_id=found[1], token=token)


def _title(text: str) -> None:
    """The browser tab's title, when served (no document in a notebook or a test)."""
    if pn.state.curdoc is not None:
        pn.state.curdoc.title = text


def not_found_pane() -> pn.viewable.Viewable:
    return pn.pane.HTML(f"<h3>Not found</h3><p>{NOT_FOUND_TEXT}</p>")


class GuardedRunView(RunView):
    """``RunView`` for a viewer who may lose access: re-checks ``grant`` before each
    refresh; once refused, stops refreshing and replaces the dashboard with a notice."""

    def __init__(self, store: RunStore, grant: Grant, **params: Any):
        self._store = store
        self._grant = grant
        self._outer = pn.Column(sizing_mode="stretch_width")
        self.revoked = False
        super().__init__(**params)
        self._outer.objects = [self._layout]

    def __panel__(self) -> pn.viewable.Viewable:
        super().__panel__()  # schedules the periodic refresh
        return self._outer

    def refresh(self) -> None:
        if self.revoked:
            return
        if not self._grant.allowed(self._store):
            self.revoked = True
            self.stop()
            self._outer.objects = [pn.pane.HTML(f"<h3>Not available</h3><p>{GONE_TEXT}</p>")]
            return
        super().refresh()


def run_page(store: RunStore, grant: Grant | None) -> pn.viewable.Viewable:
    """One run's live dashboard for ``grant`` (the "not found" text without access)."""
    if grant is None:
        return not_found_pane()
    try:
        run = grant.check(store)
    except RunNotFound:
        return not_found_pane()
    _title("gpulab run")  # the run's name stays out of the title: it is data
    return GuardedRunView(store, grant, data=RunData(run))


class GuardedCompareView(CompareView):
    """``CompareView`` that re-checks every run's grant before each refresh."""

    def __init__(self, store: RunStore, grants: Sequence[Grant], **params: Any):
        self._store = store
        self._grants = list(grants)
        self._outer = pn.Column(sizing_mode="stretch_width")
        self.revoked = False
        super().__init__(**params)
        self._outer.objects = [self._layout]

    def __panel__(self) -> pn.viewable.Viewable:
        super().__panel__()
        return self._outer

    def refresh(self) -> None:
        if self.revoked:
            return
        if not all(g.allowed(self._store) for g in self._grants):
            self.revoked = True
            self.stop()
            self._outer.objects = [pn.pane.HTML(f"<h3>Not available</h3><p>{GONE_TEXT}</p>")]
            return
        super().refresh()


def visible_grants(store: RunStore, grants: Iterable[Grant]) -> list[Grant]:
    """The grants whose run the viewer may see now (others left out, missing or not)."""
    return [g for g in grants if g.allowed(store)]


def compare_page(store: RunStore, grants: Sequence[Grant] | None) -> pn.viewable.Viewable:
    visible = visible_grants(store, grants or ())
    if not visible:
        return not_found_pane()
    runs = [g.check(store) for g in visible]
    _title("gpulab: compare runs")
    return GuardedCompareView(store, visible, data=CompareData(runs))


def _run_rows(manifests: Iterable[Manifest], base: str, *, owner_column: bool) -> str:
    e = html.escape
    rows = []
    for m in manifests:
        link = base + urls.run_path(m.owner, m.id)
        cells = [
            f"<td><input type='checkbox' name='run' value='{e(m.owner)}/{e(m.id)}'></td>",
            f"<td><a href='{e(link)}'>{e(m.name or m.id)}</a></td>",
        ]
        if owner_column:
            cells.append(f"<td>{e(m.owner)}</td>")
        cells += [f"<td>{e(m.id)}</td>", f"<td>{e(m.status)}</td>", f"<td>{e(m.created)}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(rows)


def index_html(user: str, own: Sequence[Manifest], shared: Sequence[Manifest], base: str,
               *, operator: bool, students: Sequence[Manifest] | None = None) -> str:
    """The landing page: ``user``'s runs and runs shared with them, each linking to its
    dashboard; tick several and "compare" opens them overlaid. ``students``: the runs of
    the workshop members ``user`` instructs (None: not an instructor, no such section).
    ``base``: the service's URL (ends with ``/``)."""
    e = html.escape
    head = "<tr><th></th><th>run</th>{}<th>id</th><th>status</th><th>created</th></tr>"
    own_rows = _run_rows(own, base, owner_column=False) or (
        "<tr><td colspan='5'>no runs yet</td></tr>")
    shared_rows = _run_rows(shared, base, owner_column=True) or (
        "<tr><td colspan='6'>none</td></tr>")
    student_section = ""
    if students is not None:
        student_rows = _run_rows(students, base, owner_column=True) or (
            "<tr><td colspan='6'>none</td></tr>")
        student_section = (f"<h2>Your students' runs</h2><table class='gpulab-students'>"
                           f"{head.format('<th>owner</th>')}{student_rows}</table>")
    usage = (f"<p><a href='{e(base + urls.usage_path())}'>GPU usage (operators)</a></p>"
             if operator else "")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>gpulab dashboards</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .6em;"
        "text-align:left}</style></head><body>"
        f"<h1>Run dashboards</h1><p>Signed in as {e(user)}.</p>{usage}"
        f"<form method='get' action='{e(base + 'compare')}'>"
        f"<h2>Your runs</h2><table class='gpulab-own'>{head.format('')}{own_rows}</table>"
        f"<h2>Shared with you</h2><table class='gpulab-shared'>"
        f"{head.format('<th>owner</th>')}{shared_rows}</table>{student_section}"
        "<p><button type='submit'>Compare the ticked runs</button></p></form>"
        "</body></html>"
    )


def parse_run_refs(values: Iterable[str]) -> list[tuple[str, str]]:
    """``OWNER/RUN_ID`` strings as pairs (malformed ones kept: ``viewable`` refuses them
    like missing runs, so a typo and a forbidden run look the same)."""
    refs = []
    for value in values:
        owner, _, run_id = value.partition("/")
        refs.append((owner, run_id))
    return refs


def link_url(base: str, token: str) -> str:
    return base + urls.link_path(token)


__all__ = [
    "GONE_TEXT",
    "NOT_FOUND_HTML",
    "NOT_FOUND_TEXT",
    "Grant",
    "Instructs",
    "GuardedCompareView",
    "GuardedRunView",
    "compare_page",
    "find_link",
    "index_html",
    "link_url",
    "parse_run_refs",
    "run_page",
    "visible_grants",
]
