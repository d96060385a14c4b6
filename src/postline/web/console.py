"""The read-only web console of ``postline serve``: server-rendered HTML, no JavaScript.

=============================  ====================================================
``GET  /``                     the project: assets by kind, validation problems
``GET  /assets/{kind}/{name}`` the resolved asset (as ``postline show``, secrets
                               masked) and its Asset Usage box
``GET  /sources/{name}``       ledger of an EmailSource: counts, latest 200 entries
``GET  /services/{name}``      outbox of an EmailService: counts, latest 200 rows
``GET/POST /login``, ``POST /logout``  the session cookie
any other URL                  an HTML "Not found" page (404) linking back to ``/``;
                               under ``/api`` the API's JSON 404 instead
=============================  ====================================================

Pages need the API token: ``Authorization: Bearer <token>`` or the session cookie set by
``/login``. The cookie holds a random session id kept in server memory (never the token):
it ends on logout, after 30 minutes unused, 12 hours after login, or when the server
restarts (:class:`postline.web.guard.Sessions`). Repeated wrong tokens from one address are
answered 429 for a growing time. Everything is served from this
module (no external assets) because the console runs on closed networks; every value
is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.responses import HTMLResponse

from postline.errors import ConfigError
from postline.state.paths import ledger_path, outbox_path
from postline.web.pages import page

LATEST = 200



def _page(title: str, body: str, *, status: int = 200, logged_in: bool = True,
          headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """A console page: ``body`` (HTML escaped by its builder) in the base template."""
    return page("base.html", title=title, body=body, status=status, logged_in=logged_in,
                headers=headers, **context)


def _table(cols: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """An HTML table; ``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    # in a scrolling box: on a phone a wide table scrolls on its own, the page does not
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _link(kind: str, name: str, *, text: str | None = None) -> str:
    href = f"/assets/{quote(kind, safe='')}/{quote(name, safe='')}"
    return f'<a href="{escape(href)}">{escape(text or name)}</a>'


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else ""


def _counts(counts: dict[str, int]) -> str:
    return '<p class="counts">' + "".join(
        f"<span>{escape(s)}: <b>{n}</b></span>" for s, n in counts.items()) + "</p>"


def _description(e: Any) -> str:
    # as 'postline assets' shows it: a description built from a secret stays masked
    if ("description",) in e.sensitive:
        return "***"
    desc = e.model.description if e.model is not None else e.doc.data.get("description")
    return str(desc or "")


def index_page(project: Any, *, new_kinds: Iterable[str] = ()) -> str:
    """HTML body of ``/``: a "New <kind>" link for each of ``new_kinds``, every asset by
    kind, then the project's problems."""
    parts = [f"<h1>Project <code>{escape(str(project.root))}</code></h1>"]
    if new_kinds:
        parts.append('<p class="new">' + "".join(
            f'<a href="/new/{escape(quote(k, safe=""))}">New {escape(k)}</a>'
            for k in new_kinds) + "</p>")
    first_error = {}
    for p in project.errors:
        first_error.setdefault(p.asset, str(p))
    by_kind: dict[str, list] = {}
    for e in project.entries():
        by_kind.setdefault(e.kind, []).append(e)
    if not by_kind:
        parts.append('<p class="muted">No assets.</p>')
    # as `postline assets` counts: assets that reference it, each once
    pairs = {(r.target_kind, r.target, r.source_kind, r.source) for r in project.references}
    users = Counter((kind, name) for kind, name, _, _ in pairs)
    for kind in sorted(by_kind):
        rows = []
        for e in by_kind[kind]:
            status = ('<span class="ok">valid</span>' if e.model is not None else
                      f'<span class="err">{escape(first_error.get(e.label, "invalid"))}</span>')
            name = _link(e.kind, e.name) + _runtime_link(e.kind, e.name)
            rows.append((name, escape(_description(e)), str(users[(e.kind, e.name)]),
                         f"<code>{escape(f'{e.doc.file}:{e.doc.line}')}</code>", status))
        parts.append(f"<h2>{escape(kind)} <span class='muted'>({len(rows)})</span></h2>")
        parts.append(_table(("Name", "Description", "Used by", "Location", "Status"), rows))
    errors, warnings = project.errors, project.warnings
    parts.append(f"<h2>Validation: <span class='{'err' if errors else 'ok'}'>{len(errors)} "
                 f"error(s)</span>, <span class='{'warn' if warnings else 'ok'}'>"
                 f"{len(warnings)} warning(s)</span></h2>")
    if project.problems:
        items = "".join(f"<li class='{'err' if p.severity == 'error' else 'warn'}'>"
                        f"<code>{escape(str(p))}</code>{_fix_link(project, p)}</li>"
                        for p in project.problems)
        parts.append(f"<ul class='problems'>{items}</ul>")
    return "".join(parts)


def _fix_link(project: Any, problem: Any) -> str:
    """`` · fix`` linking to the page of the asset a problem is about, when it is one."""
    kind, _, name = (problem.asset or "").partition("/")
    if not name or not any(e.kind == kind and e.name == name for e in project.entries()):
        return ""
    return f' <span class="muted">·</span> {_link(kind, name, text="fix")}'


def _runtime_link(kind: str, name: str) -> str:
    """`` · ledger`` for a source, `` · outbox`` for a service (what they did), else ''."""
    where = {"EmailSource": ("sources", "ledger"), "EmailService": ("services", "outbox")}
    if kind not in where:
        return ""
    path, what = where[kind]
    href = f"/{path}/{quote(name, safe='')}"
    return f' <span class="muted">·</span> <a href="{escape(href)}">{what}</a>'


def not_found_page(path: str) -> str:
    """HTML body for a URL the console does not have."""
    return (f"<h1>Not found</h1><p>There is no page <code>{escape(path)}</code>.</p>"
            "<p><a href='/'>Back to the project</a> (every asset, ledger and outbox is "
            "linked from there; the HTTP API is under <code>/api</code>, its docs at "
            "<code>/docs</code>).</p>")


def usage_box(project: Any, e: Any) -> str:
    """HTML of the Asset Usage box of entry ``e``: how many assets reference it; expanded,
    which ones (linked) through which field."""
    refs = project.usage(e.name, e.kind)
    if not refs:
        return '<div class="box"><b>Asset usage</b>: Not used anywhere else</div>'
    users = list(dict.fromkeys((r.source_kind, r.source) for r in refs))
    rows = [(f"{escape(r.source_kind)}/{_link(r.source_kind, r.source)}",
             f"<code>{escape(r.field)}</code>"
             + (f" → <code>{escape(r.target_text)}</code>" if r.key or r.via_macro else "")
             + (" (macro)" if r.via_macro else ""),
             f"<code>{escape(f'{r.file}:{r.line}')}</code>") for r in refs]
    # as the seed's box: the count first, click to expand, then click to follow
    return (f'<details class="usage"><summary class="box"><b>Asset usage</b>: Used by '
            f'{len(users)} asset(s)</summary>'
            + _table(("Asset", "Field", "Location"), rows) + "</details>")


def asset_page(project: Any, kind: str, name: str, *, actions: str = "") -> str:
    """HTML body of one asset: resolved as ``postline show`` prints it, plus its usage;
    ``actions`` (HTML: Edit, Test connection, ...) under the title.

    Raises ConfigError when there is no such asset.
    """
    from postline.assets import render
    from postline.project import stored_as

    e = project.entry(kind, name)
    parts = [f"<h1>{escape(e.kind)} <code>{escape(e.name)}</code></h1>",
             (f"<p class='muted'>{escape(_description(e))} · <code>"
              f"{escape(f'{e.doc.file}:{e.doc.line}')}</code></p>"), actions]
    extra = {"EmailSource": "sources", "EmailService": "services"}.get(e.kind)
    if extra:
        what = "ledger" if extra == "sources" else "outbox"
        parts.append(f'<p><a href="/{extra}/{escape(quote(e.name, safe=""))}">'
                     f"Show the {what}</a></p>")
    parts.append(usage_box(project, e))
    mine = [p for p in project.problems if p.asset == e.label]
    if e.model is None:
        parts.append("<h2 class='err'>Invalid</h2>")
    else:
        lines = render.walk(e.model, sensitive=e.sensitive, stored_as=stored_as(project))
        parts.append(f"<h2>Resolved</h2><pre>{escape(render.as_text(lines))}</pre>")
    if mine:
        items = "".join(f"<li class='{'err' if p.severity == 'error' else 'warn'}'>"
                        f"<code>{escape(str(p))}</code></li>" for p in mine)
        parts.append(f"<ul class='problems'>{items}</ul>")
    return "".join(parts)


def _ledger_rows(path, source: str) -> tuple[dict[str, int], list]:
    """Counts per state and the latest entries of ``source`` in the ledger at ``path``,
    opened read-only (looking never creates or changes it)."""
    from postline.state.ledger import SqliteLedger

    ledger = SqliteLedger(path=path, read_only=True)
    try:
        return ledger.counts(source), ledger.entries(source, limit=LATEST, newest_first=True)
    finally:
        ledger.close()


def _page_head(project: Any, kind: str, name: str, path: Path, why: str) -> tuple[str, str]:
    """The heading of the page of the ledger (an EmailSource) or the outbox (an
    EmailService) of asset ``name``, and the whole page when the file at ``path`` does not
    exist yet (else ""), saying ``why``. Raises ConfigError if there is no such asset."""
    project.entry(kind, name)
    what = "ledger" if kind == "EmailSource" else "outbox"
    head = f"<h1>{what.capitalize()} of {kind} {_link(kind, name)}</h1>"
    if path.exists():
        return head, ""
    return head, head + (f"<p class='muted'>No {what} yet (<code>{escape(str(path))}</code> "
                         f"does not exist): {why}.</p>")


def ledger_page(project: Any, name: str, *, row_actions=None) -> str:
    """HTML body of ``/sources/{name}``; ``row_actions(entry)`` (HTML) fills a last column
    when given. Raises ConfigError if there is no such source."""
    from postline.state.stores import open_ledger, shared_store

    if shared_store(project) is not None:   # PostgreSQL: read-only, never migrating
        project.entry("EmailSource", name)
        head = f"<h1>Ledger of EmailSource {_link('EmailSource', name)}</h1>"
        ledger = open_ledger(project, read_only=True)
        try:
            counts = ledger.counts(name)
            entries = ledger.entries(name, limit=LATEST, newest_first=True)
        finally:
            ledger.close()
        return _ledger_body(head, counts, entries, row_actions)
    path = ledger_path(project.state_dir)
    head, missing = _page_head(project, "EmailSource", name, path, "this source has not run")
    if missing:
        return missing
    try:
        counts, entries = _ledger_rows(path, name)
    except sqlite3.Error as exc:   # a damaged file; the ledger says so itself when opening
        raise ConfigError(f"ledger {path} cannot be read: {exc}") from None
    return _ledger_body(head, counts, entries, row_actions)


def _ledger_body(head: str, counts: dict[str, int], entries: list, row_actions) -> str:
    if not entries:
        return head + _counts(counts) + "<p class='muted'>No entries for this source.</p>"
    rows = [(f"<code>{escape(e.key)}</code>", escape(e.state), str(e.attempts),
             escape(_when(e.updated)), escape(e.subject or ""), escape(e.reason or ""))
            + ((row_actions(e),) if row_actions else ()) for e in entries]
    cols = ("Key", "State", "Attempts", "Updated", "Subject", "Reason") \
        + (("",) if row_actions else ())
    return (head + _counts(counts) + f"<h2>Latest {len(entries)} entries</h2>"
            + _table(cols, rows))


def outbox_page(project: Any, name: str, *, row_actions=None) -> str:
    """HTML body of ``/services/{name}``; ``row_actions(entry)`` (HTML) fills a last column
    when given. Raises ConfigError if there is no such service."""
    from postline.state.outbox import Outbox
    from postline.state.stores import open_outbox, shared_store

    if shared_store(project) is not None:   # the fleet's outbox on PostgreSQL
        project.entry("EmailService", name)
        head = f"<h1>Outbox of EmailService {_link('EmailService', name)}</h1>"
        outbox = open_outbox(project)
    else:
        path = outbox_path(project.state_dir)
        head, missing = _page_head(project, "EmailService", name, path,
                                   "nothing was queued by SendAndForget")
        if missing:
            return missing
        outbox = Outbox(path, read_only=True)
    try:
        counts, entries = outbox.counts(name), outbox.list(name, limit=LATEST)
    finally:
        outbox.close()
    if not entries:
        return head + _counts(counts) + "<p class='muted'>No mails for this service.</p>"
    rows = [(str(e.id), escape(e.state), escape(_when(e.updated_at)), str(e.attempts),
             escape(e.summary), escape(e.reason or str((e.result or {}).get("server_reply", ""))))
            + ((row_actions(e),) if row_actions else ()) for e in entries]
    cols = ("Id", "State", "Updated", "Tries", "Recipients | subject", "Reason / reply") \
        + (("",) if row_actions else ())
    return (head + _counts(counts) + f"<h2>Latest {len(entries)} mails</h2>"
            + _table(cols, rows))
