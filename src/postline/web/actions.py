"""What a console page can do besides editing: test a connection (the steps of ``postline
test-connection``), retry or reset ledger entries (``postline ledger retry|reset``), retry
outbox mails (``postline outbox retry``). Each state change is a POST with the session's
CSRF token, asks for confirmation in the page, and is written to the audit log."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from postline.errors import ConfigError, PostlineError
from postline.state.states import LedgerState, OutboxState
from postline.web.guard import client_of


def _button(action: str, text: str, csrf: str, *, confirm: str = "", css: str = "",
            hidden: dict[str, str] | None = None) -> str:
    fields = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                     for k, v in (hidden or {}).items())
    ask = f' data-confirm="{escape(confirm)}"' if confirm else ""
    cls = f' class="{css}"' if css else ""
    return (f'<form method="post" action="{escape(action)}"{ask}><input type="hidden" '
            f'name="csrf" value="{escape(csrf)}">{fields}<button{cls}>{escape(text)}</button>'
            "</form>")


def asset_actions(project: Any, kind: str, name: str, *, csrf: str, read_only: bool) -> str:
    """The Edit link and, on a connection, the Test connection (and Sign in) buttons."""
    from postline.web.editor import FORM_KINDS, asset_url
    from postline.web.signin import _device_directions

    entry = project.entry(kind, name)   # ConfigError (404) first when there is no such asset
    base = asset_url(kind, name)
    parts = []
    if kind in FORM_KINDS and not read_only:
        parts.append(f'<a href="{escape(base)}/edit">Edit</a>')
    if kind in FORM_KINDS and not read_only:
        parts.append(_button(f"{base}/delete", "Delete", csrf, css="danger",
                             confirm=f"Delete {kind} {name} from its file?"))
    if kind == "EmailConnection":
        parts.append(_button(f"{base}/test", "Test connection", csrf))
        if entry.model is not None and _device_directions(entry.model) and not read_only:
            parts.append(_button(f"{base}/signin", "Sign in", csrf))
    return f'<div class="actions">{"".join(parts)}</div>' if parts else ""


def ledger_actions(project: Any, name: str, *, csrf: str, read_only: bool) -> str:
    """Retry / reset buttons under a ledger (none when read-only)."""
    if read_only:
        return ""
    base = f"/sources/{quote(name, safe='')}"
    return ('<h2>Actions</h2><div class="actions">'
            + _button(f"{base}/retry", "Retry all failed mails", csrf,
                      confirm=f"Move every failed mail of {name} back into its input "
                      "folder, to be processed again?")
            + _button(f"{base}/reset", "Reset all entries", csrf, css="danger",
                      confirm=f"Forget every ledger entry of {name}? Mails still in the "
                      "input folder are read again.")
            + "</div>")


def ledger_row_actions(name: str, csrf: str):
    """``entry -> HTML``: Retry (a failed entry) and Reset buttons for one ledger row."""
    base = f"/sources/{quote(name, safe='')}"

    def cell(entry: Any) -> str:
        key = {"key": entry.key}
        out = _button(f"{base}/retry", "Retry", csrf, hidden=key,
                      confirm="Move this failed mail back into the input folder?") \
            if entry.state == LedgerState.FAILED else ""
        return '<div class="actions">' + out + _button(
            f"{base}/reset", "Reset", csrf, hidden=key,
            confirm="Forget this entry? A mail still in the input folder is read again.") \
            + "</div>"
    return cell


def outbox_row_actions(name: str, csrf: str):
    """``entry -> HTML``: a Retry button for a failed (or unknown) outbox mail."""
    def cell(entry: Any) -> str:
        if entry.state not in (OutboxState.FAILED, OutboxState.UNKNOWN):
            return ""
        return _button(f"/services/{quote(name, safe='')}/retry", "Retry", csrf,
                       hidden={"id": str(entry.id)},
                       confirm=f"Queue mail {entry.id} again?" + (
                           " Its outcome is unknown: the recipients may get it twice."
                           if entry.state == OutboxState.UNKNOWN else ""))
    return cell


def outbox_actions(project: Any, name: str, *, csrf: str, read_only: bool) -> str:
    """The retry button under an outbox (none when read-only)."""
    if read_only:
        return ""
    return ('<h2>Actions</h2><div class="actions">'
            + _button(f"/services/{quote(name, safe='')}/retry", "Retry all failed mails",
                      csrf, confirm=f"Queue every failed mail of {name} again?")
            + "</div>")


def retry_ledger(project: Any, name: str, keys: list[str]) -> str:
    """Failed mails of source ``name`` (``keys``, or all) back to their input folder;
    returns what was done in one line. Raises ConfigError / PostlineError."""
    from postline.project import source_of
    from postline.protocols import open_reader
    from postline.state.stores import open_ledger
    from postline.workflow.retry import retry_failed

    source, conn, protocol = source_of(project, name)
    ledger = open_ledger(project)
    try:
        entries = ledger.entries(name, state=LedgerState.FAILED)
        if keys:
            entries = [e for e in entries if e.key in keys]
        if not entries:
            return f"no failed entries for source {name}"
        report = retry_failed(source=source, protocol=protocol, entries=entries, ledger=ledger,
                              reader_factory=lambda: open_reader(project, conn),
                              work_dir=project.state_dir / "work" / f"retry-{name}")
    finally:
        ledger.close()
    n = len(report.reset)
    tail = "; ".join(report.problems)
    return (f"retrying {n} mail{'' if n == 1 else 's'} of source {name}"
            + (f"; {report.moved} moved back to {source.folders.input!r}" if report.moved
               else "") + "; the next round of 'postline run' processes them"
            + (f" ({tail})" if tail else ""))


def reset_ledger(project: Any, name: str, keys: list[str]) -> str:
    from postline.state.stores import open_ledger

    project.entry("EmailSource", name)
    ledger = open_ledger(project)
    try:
        n = ledger.reset(name, keys or None)
    finally:
        ledger.close()
    return f"reset {n} entr{'y' if n == 1 else 'ies'} of source {name}"


def retry_outbox(project: Any, name: str, ids: list[str]) -> str:
    from postline.state.stores import open_outbox

    project.entry("EmailService", name)
    outbox = open_outbox(project)
    try:
        if ids:
            n = sum(outbox.requeue(name, entry_id=int(i)) for i in ids if i.isdigit())
        else:
            n = outbox.requeue(name, all_failed=True)
    finally:
        outbox.close()
    return (f"queued {n} mail(s) of {name} again; 'postline serve' or 'postline run' "
            "sends them")


def add_routes(app: FastAPI, con: Any) -> None:
    """The POST routes of the actions."""

    async def test_connection(request: Request, name: str) -> Response:
        form, refusal = await con.form(request, changes=False)
        if refusal is not None:
            return refusal
        from postline.web import testconn

        project = con.workspace.project
        try:
            project.entry("EmailConnection", name)
        except ConfigError as exc:
            return con.page(request, "Not found", f"<p class='err'>{escape(str(exc))}</p>",
                            status=404)
        return testconn.response(project, name, context=con.context(request))

    from postline.web import signin

    signins = signin.SignIns()

    async def start_signin(request: Request, name: str) -> Response:
        form, refusal = await con.form(request)
        if refusal is not None:
            return refusal
        try:
            await run_in_threadpool(signins.start, con.workspace.project, name)
        except PostlineError as exc:
            return con.page(request, "Not signed in", f"<h1>Not signed in</h1><p class='err'>"
                            f"{escape(str(exc))}</p>", status=409)
        con.audit.record(client=client_of(request.scope), action="sign in",
                         asset=f"EmailConnection/{name}", detail="device flow started")
        return RedirectResponse(f"/assets/EmailConnection/{quote(name, safe='')}/signin", 303)

    async def signin_page(request: Request, name: str) -> Response:
        if not con.authed(request):
            return RedirectResponse("/login?next=" + quote(request.url.path), 303)
        return con.page(request, f"Sign in {name}", signin.page(signins.get(name), name))

    async def signin_live(request: Request, name: str) -> Response:
        if not con.authed(request):
            return Response("log in again", status_code=401)
        return Response(signin.live(signins.get(name)), media_type="text/html",
                        headers={"Cache-Control": "no-store"})

    for path, handler, method in (("signin", start_signin, "POST"),
                                  ("signin", signin_page, "GET"),
                                  ("signin/live", signin_live, "GET")):
        app.add_api_route(f"/assets/EmailConnection/{{name}}/{path}", handler,
                          methods=[method], include_in_schema=False)

    def state_change(what: str, do, back: str, kind: str, field: str):
        async def handler(request: Request, name: str) -> Response:
            form, refusal = await con.form(request)
            if refusal is not None:
                return refusal
            chosen = [v for v in form.get(field, []) if v]
            try:
                said = await run_in_threadpool(do, con.workspace.project, name, chosen)
            except PostlineError as exc:
                return con.page(request, "Not done", f"<h1>Not done</h1><p class='err'>"
                                f"{escape(str(exc))}</p>", status=409)
            con.audit.record(client=client_of(request.scope), action=what,
                             asset=f"{kind}/{name}", detail=said)
            return RedirectResponse(f"/{back}/{quote(name, safe='')}?done="
                                    + quote(said, safe=""), 303)
        return handler

    app.add_api_route("/assets/EmailConnection/{name}/test", test_connection,
                      methods=["POST"], include_in_schema=False)
    app.add_api_route("/sources/{name}/retry", state_change(
        "ledger retry", retry_ledger, "sources", "EmailSource", "key"), methods=["POST"],
        include_in_schema=False)
    app.add_api_route("/sources/{name}/reset", state_change(
        "ledger reset", reset_ledger, "sources", "EmailSource", "key"), methods=["POST"],
        include_in_schema=False)
    app.add_api_route("/services/{name}/retry", state_change(
        "outbox retry", retry_outbox, "services", "EmailService", "id"), methods=["POST"],
        include_in_schema=False)
