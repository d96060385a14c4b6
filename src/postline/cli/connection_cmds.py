"""``postline test-connection`` and ``postline login``.

Each handler returns the exit status: 0 success, 1 failure (reasons on stdout/stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from postline.cli.parsing import HelpFormatter

DIRECTIONS = ("incoming", "outgoing")

TEST_EPILOG = """Examples:
  postline test-connection examples/local Mailbox
  postline test-connection examples/local Mailbox --direction outgoing
  postline test-connection examples/local Mailbox --json
  postline test-connection . Shared          # a StateStore: server version, schema, current?

Exit status 0 only when every tested direction passed every step."""

LOGIN_EPILOG = """Examples:
  postline login examples/local Mailbox
  postline login examples/local Mailbox --direction outgoing

Shows a link and a code to approve on any device; the refresh token is then kept,
encrypted with the project's key, in the project's state directory."""


def register(sub: Any) -> None:

    p = sub.add_parser("test-connection", help="connect step by step and say what works",
                       epilog=TEST_EPILOG, formatter_class=HelpFormatter)
    p.add_argument("project", metavar="PROJECT", help="project directory")
    p.add_argument("name", metavar="NAME", help="EmailConnection or StateStore asset")
    p.add_argument("--direction", choices=DIRECTIONS, help="test only this direction")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_test_connection)

    p = sub.add_parser("login", help="device-flow sign-in for an OAuth connection",
                       epilog=LOGIN_EPILOG, formatter_class=HelpFormatter)
    p.add_argument("project", metavar="PROJECT", help="project directory")
    p.add_argument("name", metavar="NAME", help="EmailConnection asset")
    p.add_argument("--direction", choices=DIRECTIONS,
                   help="sign in for this direction only (default: every direction that "
                        "uses oauth_device_flow)")
    p.set_defaults(handler=cmd_login)


def _console(stream=None):
    from rich.console import Console

    stream = stream or sys.stdout
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty(),
                   width=None if stream.isatty() else 200)


# -- test-connection ------------------------------------------------------------------------

def cmd_test_connection(args: argparse.Namespace) -> int:
    from postline.cli.state_cmds import is_state_store, test_state_store
    from postline.errors import PostlineError
    from postline.project import open_project
    from postline.protocols.diagnose import diagnose

    project = open_project(args.project)
    if is_state_store(project, args.name):
        return test_state_store(project, args)
    directions = [args.direction] if args.direction else None
    try:
        reports = diagnose(project, args.name, directions=directions)
    except PostlineError as exc:
        if not args.json:
            raise
        print(json.dumps({"connection": args.name, "ok": False, "error": exc.message,
                          "hint": exc.hint, "directions": []}, indent=2))
        return 1
    ok = bool(reports) and all(r.ok for r in reports)
    if args.json:
        print(json.dumps({"connection": args.name, "ok": ok,
                          "directions": [r.as_dict() for r in reports]}, indent=2,
                         ensure_ascii=False))
    else:
        render(_console(), args.name, reports)
    return 0 if ok else 1


def _tls_lines(data: dict) -> list[str]:
    lines = []
    if data.get("subject"):
        lines.append(f"certificate {data['subject']}, issued by {data.get('issuer', '?')}")
    if data.get("expires"):
        lines.append(f"valid until {data['expires'][:10]} ({data.get('days_left')} days left)"
                     + ("" if data.get("verified") else "  [yellow]NOT verified[/]"))
    return lines


def render(console: Any, name: str, reports: list) -> None:
    """The human-readable report: one block per direction, one line per step."""
    from rich.markup import escape

    for r in reports:
        console.print(f"[bold]{escape(name)}[/] {r.direction}: {r.protocol} "
                      f"{escape(r.host)}:{r.port}, security {r.security}")
        if r.security == "none":
            console.print("  [yellow]![/] not encrypted (security: none)")
        for st in r.steps:
            mark = "[green]✓[/]" if st.ok else "[red]✗[/]"
            ms = f"{st.seconds * 1000:7.1f} ms"
            detail = st.detail if st.ok else (r.error or st.detail)
            if st.ok and len(detail) > 150:  # --json has it all
                detail = detail[:149] + "…"
            console.print(f"  {mark} {st.name:<15}{ms}  {escape(str(detail))}")
            if st.name in ("tls", "starttls") and st.ok:
                for line in _tls_lines(st.data):
                    console.print(f"    {'':<24}{line}")
        if r.features:
            shown = []
            for key, value in r.features.items():
                if key == "AUTH":
                    shown.append(f"AUTH {' '.join(value) or '-'}")
                elif value:
                    shown.append(key if value is True else f"{key} {value}")
            console.print(f"    {'':<24}[dim]server offers: {escape(', '.join(shown))}[/]")
        if r.ok:
            console.print(f"  [green bold]PASSED[/] {r.direction}\n")
        else:
            console.print(f"  [red bold]FAILED[/] {r.direction}")
            if r.hint:
                console.print(f"  [bold]fix:[/] {escape(r.hint)}")
            console.print()


# -- login ----------------------------------------------------------------------------------

def _show_flow(connection: str, direction: str) -> Any:
    def show(flow: dict) -> None:
        url = flow.get("verification_uri_complete") or flow.get("verification_uri")
        out = sys.stdout
        print(f"To sign in for connection '{connection}' ({direction}), open\n\n    {url}\n",
              file=out)
        print(f"and enter the code:  {flow['user_code']}\n", file=out)
        if out.isatty():
            try:
                import segno

                segno.make(url, error="m").terminal(out=out, compact=True)
            except Exception:  # noqa: BLE001 - the QR code is a convenience only
                pass
        minutes = int(flow.get("expires_in", 900)) // 60
        print(f"Waiting for approval (the code expires in {minutes} minutes) ...", file=out,
              flush=True)
    return show


def cmd_login(args: argparse.Namespace) -> int:
    from postline.auth import oauth
    from postline.errors import ConfigError
    from postline.project import open_project
    from postline.protocols import endpoint_of
    from postline.state import token_cache

    project = open_project(args.project)
    conn = project.get("EmailConnection", args.name)
    if conn.type == "microsoft365":
        from postline.protocols.graph import login as graph_login

        account, path = graph_login(project, conn, _show_flow(conn.name, "microsoft365"))
        print(f"✓ Signed in as {account}; the token is stored encrypted in {path}")
        return 0
    wanted = [args.direction] if args.direction else [
        d for d in DIRECTIONS if conn.endpoint(d)
        and conn.endpoint(d).credential.type == "oauth_device_flow"]
    if not wanted:
        raise ConfigError(f"connection {conn.name!r} uses no oauth_device_flow credential",
                          hint="only device-flow credentials need 'postline login'")
    done: dict[tuple, Any] = {}
    for direction in wanted:
        ep = endpoint_of(conn, direction)
        cred = ep.credential
        if cred.type != "oauth_device_flow":
            raise ConfigError(f"connection {conn.name!r} {direction} uses credential type "
                              f"{cred.type}, not oauth_device_flow",
                              hint="only device-flow credentials need 'postline login'")
        path = token_cache.cache_path(project.state_dir, conn.name, direction)
        same = (cred.authority, cred.client_id, tuple(cred.scopes), ep.ca_file)
        if same in done:  # one approval serves both directions when they ask the same
            token_cache.save(project, path, token_cache.load(project, done[same]) or "")
            print(f"✓ {direction}: using the same sign-in; stored encrypted in {path}")
            continue
        oauth.forget_providers()
        provider = oauth.DeviceFlowProvider(
            source=project, connection=conn.name, direction=direction,
            authority=cred.authority, client_id=cred.client_id, scopes=list(cred.scopes),
            ca_file=ep.ca_file, verify=ep.verify_identity, timeout=ep.connect_timeout)
        account = provider.login(_show_flow(conn.name, direction))
        done[same] = path
        print(f"✓ Signed in as {account} for {direction}; the token is stored encrypted in "
              f"{path}")
    return 0
