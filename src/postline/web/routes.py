"""The console's routes: who may see and change what, and where each page comes from.

=================================  ===================================================
``GET  /``                         the project: assets by kind, "New <kind>" links, problems
``GET  /assets/{kind}/{name}``     one asset resolved, its Asset Usage, Edit / Test connection
``GET  /sources/{name}``           the ledger of an EmailSource (retry, reset)
``GET  /services/{name}``          the outbox of an EmailService (retry)
``GET/POST /new/{kind}``           the form of a new asset; ``POST`` validates and saves
``GET/POST /assets/{k}/{n}/edit``  the form of an asset; ``POST`` validates and saves
``POST /assets/EmailConnection/{n}/test``  ``postline test-connection`` from the page
``GET  /audit``                    who changed what and when (the audit log)
``GET  /runtime``                  what ``postline run --status`` reports, updating live
``GET/POST /login``, ``POST /logout``  the session cookie
``GET  /static/console.js``        the console's one script
=================================  ===================================================

Pages need the API token: ``Authorization: Bearer <token>`` or the session cookie set by
``/login`` (:class:`postline.web.guard.Sessions`). A request that changes something also needs
the session's CSRF token (a hidden field of every form) unless it carries the bearer token,
must not come from another site (``Origin``/``Referer``), and is refused with 403 when
``serve --read-only`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from postline.errors import ConfigError
from postline.web import console
from postline.web.audit import AuditLog
from postline.web.guard import Guard, client_of, same_origin
from postline.web.pages import page, script_response
from postline.web.workspace import Workspace

COOKIE = "postline_session"


@dataclass
class Console:
    """What every console route shares: the project, the guard, the mode, the audit log."""

    workspace: Workspace
    guard: Guard
    read_only: bool
    audit: AuditLog

    def session(self, request: Request) -> str:
        """The live session id of ``request`` or ''."""
        sid = request.cookies.get(COOKIE, "")
        return sid if self.guard.sessions.valid(sid) else ""

    def authed(self, request: Request) -> bool:
        if self.session(request):
            return True
        return self.guard.bearer_ok(request.headers.get("authorization", ""),
                                    client_of(request.scope),
                                    f"{request.method} {request.url.path}")

    def context(self, request: Request) -> dict[str, Any]:
        """What the base template needs: the CSRF token, the mode."""
        sid = request.cookies.get(COOKIE, "")
        return {"csrf": self.guard.csrf_token(sid) if sid else "",
                "read_only": self.read_only, "logged_in": True}

    def page(self, request: Request, title: str, body: str, *, status: int = 200) -> Response:
        return page("base.html", title=title, body=body, status=status,
                    **self.context(request))

    async def form(self, request: Request, *, changes: bool = True
                   ) -> tuple[dict[str, list[str]] | None, Response | None]:
        """The posted form, or the refusal to send instead: not logged in (redirect to
        the login), another site's page (403), a missing or wrong CSRF token (403), or
        ``--read-only`` when ``changes`` (403)."""
        if not self.authed(request):
            return None, RedirectResponse("/login?next=" + quote(request.url.path), 303)
        if not same_origin(request.scope):
            return None, self.refused(request, "this form was sent from another site's page "
                                      "(its Origin is not this server); nothing was done")
        if changes and self.read_only:
            return None, self.refused(request, "this console is read-only (postline serve "
                                      "--read-only); nothing was changed")
        form = parse_qs((await request.body()).decode("utf-8", "replace"),
                        keep_blank_values=True)
        sid = request.cookies.get(COOKIE, "")
        bearer = not self.session(request)   # authed by the Authorization header
        if not bearer and not self.guard.csrf_ok(sid, (form.get("csrf") or [""])[0]):
            return None, self.refused(request, "the form's security token is missing or "
                                      "expired; reload the page and send it again")
        return form, None

    def refused(self, request: Request, why: str) -> Response:
        return self.page(request, "Refused", f"<h1>Refused</h1><p class='err'>"
                         f"{console.escape(why)}</p><p><a href='/'>Back to the project</a></p>",
                         status=403)


def add_console(app: FastAPI, project: Any, *, guard: Guard, read_only: bool = False,
                status_url: str | None = None) -> None:
    """Add the console's routes to ``app``, guarded by ``guard`` (Bearer or session cookie);
    with ``read_only`` nothing can be changed from the pages; ``status_url`` is the status
    endpoint of a ``postline run --status`` shown at ``/runtime``."""
    from postline.web import actions, editor

    workspace = Workspace(project=project)
    con = Console(workspace=workspace, guard=guard, read_only=read_only,
                  audit=AuditLog(path=project.state_dir / "audit.jsonl"))

    def guarded(title: str, build):
        async def handler(request: Request) -> Response:
            if not con.authed(request):
                return RedirectResponse("/login?next=" + quote(request.url.path), 303)
            try:
                # sqlite and rendering block: keep them off the event loop the API uses
                body = await run_in_threadpool(build, request, **request.path_params)
                return con.page(request, title, _flash(request) + body)
            except ConfigError as exc:
                return con.page(request, "Not found", f"<h1>Not found</h1><p class='err'>"
                                f"{console.escape(str(exc))}</p><p><a href='/'>Back to the "
                                "project</a></p>", status=404)
        return handler

    def index(request: Request) -> str:
        kinds = () if read_only else editor.FORM_KINDS
        return console.index_page(workspace.project, new_kinds=kinds)

    def asset(request: Request, kind: str, name: str) -> str:
        project = workspace.project
        return console.asset_page(project, kind, name, actions=actions.asset_actions(
            project, kind, name, csrf=con.context(request)["csrf"], read_only=read_only))

    def ledger(request: Request, name: str) -> str:
        csrf = con.context(request)["csrf"]
        rows = None if read_only else actions.ledger_row_actions(name, csrf)
        return console.ledger_page(workspace.project, name, row_actions=rows) + \
            actions.ledger_actions(workspace.project, name, csrf=csrf, read_only=read_only)

    def outbox(request: Request, name: str) -> str:
        csrf = con.context(request)["csrf"]
        rows = None if read_only else actions.outbox_row_actions(name, csrf)
        return console.outbox_page(workspace.project, name, row_actions=rows) + \
            actions.outbox_actions(workspace.project, name, csrf=csrf, read_only=read_only)

    app.add_api_route("/", guarded("Project", index), methods=["GET"], include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}", guarded("Asset", asset), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/sources/{name}", guarded("Ledger", ledger), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/services/{name}", guarded("Outbox", outbox), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/audit", guarded("Audit log", lambda request: con.audit.page()),
                      methods=["GET"], include_in_schema=False)
    from postline.web import runtime

    app.add_api_route("/runtime", guarded("Runtime", lambda request: runtime.page(
        workspace.project, status_url)), methods=["GET"], include_in_schema=False)

    async def runtime_live(request: Request) -> Response:
        if not con.authed(request):
            return Response("log in again", status_code=401)
        html = await run_in_threadpool(runtime.fragment, workspace.project, status_url)
        return Response(html, media_type="text/html", headers={"Cache-Control": "no-store"})

    app.add_api_route("/runtime/live", runtime_live, methods=["GET"], include_in_schema=False)
    app.add_api_route("/static/console.js", lambda: script_response(), methods=["GET"],
                      include_in_schema=False)
    editor.add_routes(app, con)
    actions.add_routes(app, con)

    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException

    async def not_found(request: Request, exc: HTTPException) -> Response:
        # a person who mistypes a console URL gets a page; API clients keep their JSON
        path = request.url.path
        if exc.status_code != 404 or path == "/api" or path.startswith(("/api/", "/docs",
                                                                        "/openapi", "/redoc")):
            return await http_exception_handler(request, exc)
        return page("base.html", title="Not found", body=console.not_found_page(path),
                    status=404, logged_in=con.authed(request), **{
                        k: v for k, v in con.context(request).items() if k != "logged_in"})

    app.add_exception_handler(HTTPException, not_found)

    @app.get("/login", include_in_schema=False)
    async def login_form(next: str = "/") -> Response:
        return page("login.html", title="Log in", next=_safe_next(next), error="",
                    logged_in=False)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        client = client_of(request.scope)
        wait = guard.failures.retry_after(client)
        if wait is not None:   # answered before the form is read
            return page("login.html", title="Log in", next="/", status=429, logged_in=False,
                        error=f"Too many failed logins from {client}; try again in {wait}s.",
                        headers={"Retry-After": str(wait)})
        if not same_origin(request.scope):
            return page("login.html", title="Log in", next="/", status=403, logged_in=False,
                        error="This login form was sent from another site's page.")
        # parsed here rather than with Form(): FastAPI's forms need python-multipart
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        next_ = _safe_next((form.get("next") or ["/"])[0])
        if not guard.token_ok(given):
            guard.failures.failed(client, "failed console login")
            return page("login.html", title="Log in", next=next_, error="Wrong token.",
                        status=401, logged_in=False)
        guard.failures.succeeded(client)
        resp = RedirectResponse(next_, 303)
        resp.set_cookie(COOKIE, guard.sessions.create(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/",
                        max_age=int(guard.limits.session_max))
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        if not same_origin(request.scope):
            return con.refused(request, "this form was sent from another site's page")
        guard.sessions.end(request.cookies.get(COOKIE, ""))
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp


def _flash(request: Request) -> str:
    """The line saying what the last form did (``?saved=1``, ``?done=...``)."""
    said = "Saved." if request.query_params.get("saved") else \
        request.query_params.get("done", "")
    return f'<p class="flash" role="status">{console.escape(said)}</p>' if said else ""


def _safe_next(value: str) -> str:
    # only a path on this server: never an absolute or protocol-relative URL
    ok = value.startswith("/") and not value.startswith("//") and "\\" not in value
    return value if ok else "/"
