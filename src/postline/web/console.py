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
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from postline import __version__
from postline.errors import ConfigError
from postline.web.guard import Guard, client_of

COOKIE = "postline_session"
LATEST = 200
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:10px 24px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin-left:auto}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:17px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{text-align:left;padding:5px 9px;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#f0f3f6;font-weight:600}td.k{white-space:nowrap}
a{color:#0969da}code,pre{font:12.5px/1.5 ui-monospace,Menlo,Consolas,monospace}
pre{background:#fff;border:1px solid #d0d7de;padding:10px 12px;overflow:auto}
.ok{color:#1a7f37}.err{color:#cf222e}.warn{color:#9a6700}.muted{color:#57606a}
.box{background:#fff;border:1px solid #d0d7de;border-left:4px solid #0969da;padding:8px 14px;margin:8px 0}
.counts span{display:inline-block;background:#fff;border:1px solid #d0d7de;border-radius:12px;padding:1px 10px;margin:0 6px 6px 0}
ul.problems{background:#fff;border:1px solid #d0d7de;padding:8px 8px 8px 28px}
button{font:inherit;padding:4px 12px;cursor:pointer}input{font:inherit;padding:4px 8px;width:320px;max-width:100%;box-sizing:border-box}
.wide{overflow-x:auto;max-width:100%}td code{overflow-wrap:anywhere}
@media (max-width:640px){header{padding:8px 12px;gap:10px}main{padding:10px 12px}
h1{font-size:19px;overflow-wrap:anywhere}th,td{padding:4px 6px}td.k{white-space:normal}
pre{white-space:pre-wrap;overflow-wrap:anywhere}}
"""


def _page(title: str, body: str, *, status: int = 200, logged_in: bool = True,
          headers: dict[str, str] | None = None) -> HTMLResponse:
    out = ('<form method="post" action="/logout"><button>Log out</button></form>'
           if logged_in else "")
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)} · postline</title><style>{_CSS}</style></head><body>"
            f'<header><a href="/">postline</a><span class="muted">{escape(__version__)}</span>'
            f"{out}</header><main>{body}</main></body></html>")
    return HTMLResponse(html, status_code=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; form-action 'self'",
                                 **(headers or {})})


def _table(cols: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """An HTML table; ``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    # in a scrolling box: on a phone a wide table scrolls on its own, the page does not
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _link(kind: str, name: str) -> str:
    href = f"/assets/{quote(kind, safe='')}/{quote(name, safe='')}"
    return f'<a href="{escape(href)}">{escape(name)}</a>'


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


def index_page(project: Any) -> str:
    """HTML body of ``/``: every asset by kind, then the project's problems."""
    parts = [f"<h1>Project <code>{escape(str(project.root))}</code></h1>"]
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
                        f"<code>{escape(str(p))}</code></li>" for p in project.problems)
        parts.append(f"<ul class='problems'>{items}</ul>")
    return "".join(parts)


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
    """HTML of the Asset Usage box of entry ``e``: who references it, through which field."""
    refs = project.usage(e.name, e.kind)
    if not refs:
        return '<div class="box"><b>Asset usage</b>: Not used anywhere else</div>'
    users = list(dict.fromkeys((r.source_kind, r.source) for r in refs))
    rows = [(f"{escape(r.source_kind)}/{_link(r.source_kind, r.source)}",
             f"<code>{escape(r.field)}</code>"
             + (f" → <code>{escape(r.target_text)}</code>" if r.key or r.via_macro else "")
             + (" (macro)" if r.via_macro else ""),
             f"<code>{escape(f'{r.file}:{r.line}')}</code>") for r in refs]
    return (f'<div class="box"><b>Asset usage</b>: Used by {len(users)} asset(s)</div>'
            + _table(("Asset", "Field", "Location"), rows))


def asset_page(project: Any, kind: str, name: str) -> str:
    """HTML body of one asset: resolved as ``postline show`` prints it, plus its usage.

    Raises ConfigError when there is no such asset.
    """
    from postline.assets import render
    from postline.cli.project_cmds import stored_as

    e = project.entry(kind, name)
    parts = [f"<h1>{escape(e.kind)} <code>{escape(e.name)}</code></h1>",
             (f"<p class='muted'>{escape(_description(e))} · <code>"
              f"{escape(f'{e.doc.file}:{e.doc.line}')}</code></p>")]
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
    from postline.source.ledger import SqliteLedger

    ledger = SqliteLedger(path=path, read_only=True)
    try:
        return ledger.counts(source), ledger.entries(source, limit=LATEST, newest_first=True)
    finally:
        ledger.close()


def ledger_page(project: Any, name: str) -> str:
    """HTML body of ``/sources/{name}``. Raises ConfigError if there is no such source."""
    from postline.source.ledger import ledger_path

    project.entry("EmailSource", name)
    head = f"<h1>Ledger of EmailSource {_link('EmailSource', name)}</h1>"
    path = ledger_path(project.state_dir)
    if not path.exists():
        return head + (f"<p class='muted'>No ledger yet (<code>{escape(str(path))}</code> "
                       "does not exist): this source has not run.</p>")
    try:
        counts, entries = _ledger_rows(path, name)
    except sqlite3.Error as exc:   # a damaged file; the ledger says so itself when opening
        raise ConfigError(f"ledger {path} cannot be read: {exc}") from None
    if not entries:
        return head + _counts(counts) + "<p class='muted'>No entries for this source.</p>"
    rows = [(f"<code>{escape(e.key)}</code>", escape(e.state), str(e.attempts),
             escape(_when(e.updated)), escape(e.subject or ""), escape(e.reason or ""))
            for e in entries]
    return (head + _counts(counts) + f"<h2>Latest {len(entries)} entries</h2>"
            + _table(("Key", "State", "Attempts", "Updated", "Subject", "Reason"), rows))


def outbox_page(project: Any, name: str) -> str:
    """HTML body of ``/services/{name}``. Raises ConfigError if there is no such service."""
    from postline.service.outbox import Outbox

    project.entry("EmailService", name)
    head = f"<h1>Outbox of EmailService {_link('EmailService', name)}</h1>"
    path = project.state_dir / "outbox.sqlite"
    if not path.exists():
        return head + (f"<p class='muted'>No outbox yet (<code>{escape(str(path))}</code> "
                       "does not exist): nothing was queued by SendAndForget.</p>")
    outbox = Outbox(path)
    try:
        counts, entries = outbox.counts(name), outbox.list(name, limit=LATEST)
    finally:
        outbox.close()
    if not entries:
        return head + _counts(counts) + "<p class='muted'>No mails for this service.</p>"
    rows = [(str(e.id), escape(e.state), escape(_when(e.updated_at)), str(e.attempts),
             escape(e.summary), escape(e.reason or str((e.result or {}).get("server_reply", ""))))
            for e in entries]
    return (head + _counts(counts) + f"<h2>Latest {len(entries)} mails</h2>"
            + _table(("Id", "State", "Updated", "Tries", "Recipients | subject",
                      "Reason / reply"), rows))


def _login_form(error: str = "", next_: str = "/") -> str:
    msg = f"<p class='err'>{escape(error)}</p>" if error else ""
    return (f"<h1>Log in</h1>{msg}<form method='post' action='/login'>"
            f"<input type='hidden' name='next' value='{escape(next_)}'>"
            "<p><label>API token (POSTLINE_API_TOKEN)<br>"
            "<input type='password' name='token' autocomplete='current-password' autofocus>"
            "</label></p><p><button>Log in</button></p></form>")


def _safe_next(value: str) -> str:
    # only a path on this server: never an absolute or protocol-relative URL
    ok = value.startswith("/") and not value.startswith("//") and "\\" not in value
    return value if ok else "/"


def add_console(app: FastAPI, project: Any, *, guard: Guard) -> None:
    """Add the console's routes to ``app``, guarded by ``guard`` (Bearer or session cookie)."""

    def authed(request: Request) -> bool:
        if guard.sessions.valid(request.cookies.get(COOKIE, "")):
            return True
        return guard.bearer_ok(request.headers.get("authorization", ""),
                               client_of(request.scope), f"GET {request.url.path}")

    def guarded(title: str, build):
        async def handler(request: Request) -> Response:
            if not authed(request):
                return RedirectResponse("/login?next=" + quote(request.url.path), 303)
            try:
                # sqlite and rendering block: keep them off the event loop the API uses
                body = await run_in_threadpool(build, **request.path_params)
                return _page(title, body)
            except ConfigError as exc:
                return _page("Not found", f"<h1>Not found</h1><p class='err'>{escape(str(exc))}"
                             "</p><p><a href='/'>Back to the project</a></p>", status=404)
        return handler

    app.add_api_route("/", guarded("Project", lambda: index_page(project)),
                      methods=["GET"], include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}", guarded(
        "Asset", lambda kind, name: asset_page(project, kind, name)),
        methods=["GET"], include_in_schema=False)
    app.add_api_route("/sources/{name}", guarded(
        "Ledger", lambda name: ledger_page(project, name)), methods=["GET"],
        include_in_schema=False)
    app.add_api_route("/services/{name}", guarded(
        "Outbox", lambda name: outbox_page(project, name)), methods=["GET"],
        include_in_schema=False)

    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException

    async def not_found(request: Request, exc: HTTPException) -> Response:
        # a person who mistypes a console URL gets a page; API clients keep their JSON
        path = request.url.path
        if exc.status_code != 404 or path == "/api" or path.startswith(("/api/", "/docs",
                                                                        "/openapi", "/redoc")):
            return await http_exception_handler(request, exc)
        return _page("Not found", not_found_page(path), status=404,
                     logged_in=authed(request))

    app.add_exception_handler(HTTPException, not_found)

    @app.get("/login", include_in_schema=False)
    async def login_form(next: str = "/") -> Response:
        return _page("Log in", _login_form(next_=_safe_next(next)), logged_in=False)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        client = client_of(request.scope)
        wait = guard.failures.retry_after(client)
        if wait is not None:   # answered before the form is read
            return _page("Log in", _login_form(f"Too many failed logins from {client}; try "
                                               f"again in {wait}s."), status=429,
                         logged_in=False, headers={"Retry-After": str(wait)})
        # parsed here rather than with Form(): FastAPI's forms need python-multipart
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        next_ = _safe_next((form.get("next") or ["/"])[0])
        if not guard.token_ok(given):
            guard.failures.failed(client, "failed console login")
            return _page("Log in", _login_form("Wrong token.", next_), status=401,
                         logged_in=False)
        guard.failures.succeeded(client)
        resp = RedirectResponse(next_, 303)
        resp.set_cookie(COOKIE, guard.sessions.create(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/",
                        max_age=int(guard.limits.session_max))
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        guard.sessions.end(request.cookies.get(COOKIE, ""))
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp
