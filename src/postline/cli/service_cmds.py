"""``postline send``, ``postline outbox list|retry`` and ``postline serve``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from postline.cli.parsing import HelpFormatter
from postline.errors import ConfigError, MessageError, PostlineError
from postline.state.states import OutboxState

SEND_EPILOG = """Examples:
  postline send examples/local Notify --message mail.json       wait for the server's answer
  echo '{"From": "me@example.test", "ToList": "ann@example.test", "Subject": "Hi",
         "Body": "<p>Hello</p>"}' | postline send examples/local Notify --message -
  postline send examples/local Notify --message mail.json --forget   queue it and return
  postline send Notify --message mail.json --json                   (project = current dir)

The message is an EmailMessage as JSON (see docs/service.md). Exit status 0 when the server
accepted the mail (or it was queued with --forget), 1 otherwise with the reason on stderr."""

OUTBOX_EPILOG = """Examples:
  postline outbox list examples/local Notify                   every mail SendAndForget queued
  postline outbox list examples/local Notify --state failed    the failed ones, with reasons
  postline outbox list examples/local Notify --state unknown   interrupted while sending
  postline outbox retry examples/local Notify --all-failed     send every failed mail again
  postline outbox retry examples/local Notify --id 42          send mail 42 again (failed or
                                                               unknown: check it was not
                                                               delivered first)"""

SERVE_EPILOG = """Examples:
  export POSTLINE_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
  postline serve examples/local                                 http://127.0.0.1:8025/docs
  postline serve examples/local --port 9000 --token-secret ApiSecrets.token
  curl -H "Authorization: Bearer $POSTLINE_API_TOKEN" -H 'Content-Type: application/json' \\
       -d @mail.json http://127.0.0.1:8025/api/services/Notify/send
  postline serve examples/local --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem

The bearer token comes from POSTLINE_API_TOKEN, or from a key of a Secret asset named by
--token-secret. Listens on 127.0.0.1 unless --host says otherwise; on any other address use
--tls-cert/--tls-key or a TLS reverse proxy (see docs/operations.md, "Security")."""


def register(sub: argparse._SubParsersAction) -> None:
    from postline.cli.output import add_target

    p = sub.add_parser("send", help="send an EmailMessage (JSON) through an Email Service",
                       formatter_class=HelpFormatter, epilog=SEND_EPILOG)
    add_target(p, "SERVICE", "the Email Service")
    p.add_argument("--message", "-m", required=True, metavar="FILE|-",
                   help="the EmailMessage as JSON: a file, or - for stdin")
    p.add_argument("--forget", action="store_true",
                   help="SendAndForget: queue durably and return without waiting")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the server (default 300)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_send)

    op = sub.add_parser("outbox", help="list or retry mails queued by SendAndForget",
                        formatter_class=HelpFormatter, epilog=OUTBOX_EPILOG)
    osub = op.add_subparsers(dest="outbox_command", metavar="ACTION")
    ls = osub.add_parser("list", help="list the outbox of a service",
                         formatter_class=HelpFormatter, epilog=OUTBOX_EPILOG)
    add_target(ls, "SERVICE", "the Email Service")
    ls.add_argument("--state", choices=[s.value for s in OutboxState],
                    help="only mails in this state (unknown: interrupted while sending)")
    ls.add_argument("--limit", type=int, default=100, metavar="N",
                    help="at most N mails, newest first (default 100)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=cmd_outbox_list)
    rt = osub.add_parser("retry", help="queue failed (or unknown) mails again",
                         formatter_class=HelpFormatter, epilog=OUTBOX_EPILOG)
    add_target(rt, "SERVICE", "the Email Service")
    g = rt.add_mutually_exclusive_group(required=True)
    g.add_argument("--id", type=int, help="one mail (failed or unknown) by its outbox id")
    g.add_argument("--all-failed", action="store_true", help="every failed mail")
    rt.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for delivery when no other postline delivers")
    rt.set_defaults(handler=cmd_outbox_retry)
    op.set_defaults(handler=lambda args: (op.print_help(sys.stderr), 2)[1])

    sp = sub.add_parser("serve", help="serve the HTTP API (send through Email Services)",
                        formatter_class=HelpFormatter, epilog=SERVE_EPILOG)
    sp.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sp.add_argument("--port", type=int, default=8025, help="port (default 8025)")
    sp.add_argument("--token-secret", metavar="ASSET.KEY",
                    help="read the API token from this Secret key (else POSTLINE_API_TOKEN)")
    sp.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate "
                    "(chain) file; needs --tls-key")
    sp.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    sp.add_argument("--max-body-mb", type=float, default=25.0, metavar="MB",
                    help="largest request body of the API in MiB (default 25); bigger: 413")
    sp.add_argument("--read-only", action="store_true",
                    help="the console shows everything but changes nothing (no forms, no "
                    "retry, no sign-in)")
    sp.add_argument("--status-url", metavar="URL",
                    help="the /status of a 'postline run --status' the console's Runtime "
                    "page shows live (e.g. http://127.0.0.1:9108/status)")
    sp.set_defaults(handler=cmd_serve)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    from postline.cli.output import project_and_name

    return project_and_name(args.target, what="SERVICE",
                            example="postline send examples/local Notify --message mail.json")


def _open(args: argparse.Namespace):
    import postline

    path, name = _target(args)
    project = postline.open_project(path)
    project.entry("EmailService", name)    # ConfigError with did-you-mean when unknown
    return project, name


def _read_message(source: str) -> object:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except OSError as exc:
        raise ConfigError(f"cannot read the message file {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = "stdin" if source == "-" else source
        raise MessageError(f"the message in {where} is not valid JSON: {exc.msg} at line "
                           f"{exc.lineno} column {exc.colno}", field="message") from None


def _console():
    from postline.cli.output import console

    return console()


def cmd_send(args: argparse.Namespace) -> int:
    from postline.service import error_to_json, open_service, result_to_json

    message = _read_message(args.message)
    project, name = _open(args)
    svc = open_service(project, name)
    try:
        if args.forget:
            queued = svc.SendAndForget(message)
            _print_queued(args, svc, queued)
            return 0
        result = svc.Send(message, timeout=args.timeout)
    except PostlineError as exc:
        if args.json:
            print(json.dumps(error_to_json(exc), indent=2))
        raise
    finally:
        svc.close()
    if args.json:
        print(json.dumps(result_to_json(result), indent=2))
        return 0
    from rich.table import Table

    from postline.cli.output import cells

    con = _console()
    con.print(f"sent {result.message_id}: {result.server_reply}", markup=False)
    table = Table()
    for col in ("recipient", "status", "code", "server said"):
        table.add_column(col)
    for r in result.recipients:
        table.add_row(*cells(r.address, "accepted" if r.accepted else "REFUSED", str(r.code),
                             r.message))
    con.print(table)
    return 0 if not result.refused else 1


def _print_queued(args, svc, queued) -> None:
    delivering = svc.delivers_outbox
    if args.json:
        print(json.dumps({**queued.to_json(), "delivered_by_this_process": delivering}))
    else:
        print(f"queued as outbox id {queued.id} ({queued.message_id})")
    if not delivering:
        pid = svc.outbox_holder_pid()
        print(f"postline (pid {pid}) delivers this outbox; it sends the mail", file=sys.stderr)
        return
    # Nobody else delivers this outbox: deliver before exiting, or the mail would wait for
    # the next postline that opens the service (it is safe on disk either way).
    if not svc.flush(args.timeout):
        print("not all queued mails were sent yet; they stay queued and are sent by the next "
              "'postline serve' or 'postline run' (see postline outbox list)", file=sys.stderr)


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from postline.cli.output import cells
    from postline.state.stores import open_outbox

    project, name = _open(args)
    outbox = open_outbox(project)
    try:
        entries = outbox.list(name, state=args.state, limit=args.limit)
    finally:
        outbox.close()
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"Outbox of {name}" + (f" ({args.state})" if args.state else ""),
                  title_justify="left")
    for col in ("id", "state", "updated", "tries", "recipients | subject", "reason / reply"):
        table.add_column(col)
    for e in entries:
        when = datetime.fromtimestamp(e.updated_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        detail = e.reason or (e.result or {}).get("server_reply", "")
        table.add_row(*cells(str(e.id), e.state, when, str(e.attempts), e.summary, detail))
    _console().print(table)
    if not entries:
        print("no mails" + (f" in state {args.state}" if args.state else ""), file=sys.stderr)
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from postline.service import open_service

    project, name = _open(args)
    svc = open_service(project, name)
    try:
        n = svc.retry(entry_id=args.id, all_failed=args.all_failed)
        if n == 0:
            what = f"mail {args.id} is not failed or unknown" if args.id is not None \
                else "no failed mails"
            raise ConfigError(f"nothing to retry in the outbox of {name}: {what}",
                              hint="see postline outbox list")
        print(f"queued {n} mail(s) again")
        if svc.delivers_outbox and not svc.flush(args.timeout):
            print("not all were sent yet; see postline outbox list", file=sys.stderr)
        counts = svc.outbox.counts(name)
    finally:
        svc.close()
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    # a project with errors still starts: the console shows them where they are, to be
    # fixed from the page (the API refuses what an invalid asset cannot do)
    from postline.project import load_project
    from postline.web.app import create_app
    from postline.web.guard import MIB, ServeLimits

    project = load_project(args.project)
    if args.token_secret:
        token = project.secret(args.token_secret)
    else:
        token = os.environ.get("POSTLINE_API_TOKEN", "")
    if len(token) < 16:
        raise ConfigError("no API token (or one shorter than 16 characters): the HTTP API needs "
                          "a bearer token", hint="set POSTLINE_API_TOKEN or pass --token-secret "
                          "SecretAsset.key")
    from postline.logs import register_secret

    register_secret(token)  # never in a log line, whatever logs a header
    tls = _tls_files(args)
    if args.max_body_mb <= 0:
        raise ConfigError(f"--max-body-mb must be more than 0, got {args.max_body_mb:g}")
    limits = ServeLimits(max_body=int(args.max_body_mb * MIB))
    app = create_app(project, token=token, limits=limits, read_only=args.read_only,
                     status_url=args.status_url)
    if project.errors:
        print(f"postline: warning: the project has {len(project.errors)} error(s) (see "
              "postline validate); the console lists them with a link to fix each",
              file=sys.stderr)
    if not tls and not _loopback(args.host):
        print(f"postline: warning: serving on {args.host} without TLS: the API token and "
              f"console cookies cross the network in clear text; pass --tls-cert/--tls-key or "
              f"put a TLS reverse proxy in front (docs/operations.md)", file=sys.stderr)
    services = _resume_services(project)
    scheme = "https" if tls else "http"
    print(f"postline console and API on {scheme}://{args.host}:{args.port}/ (API docs: /docs)",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
    finally:
        for svc in services:
            svc.close()
    return 0


def _tls_files(args: argparse.Namespace) -> tuple[str, str] | None:
    """(cert, key) when --tls-cert/--tls-key are given and load; ConfigError otherwise."""
    import ssl

    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both PEM files")
    try:   # loaded here so a bad file is one line, not a traceback from uvicorn
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            args.tls_cert, args.tls_key)
    except ssl.SSLError as exc:
        raise ConfigError(f"--tls-cert {args.tls_cert} / --tls-key {args.tls_key}: not a "
                          f"certificate and its private key in PEM ({exc.reason or exc})"
                          ) from None
    except OSError as exc:   # after SSLError, which is one too
        raise ConfigError(f"--tls-cert/--tls-key: cannot read {exc.filename or args.tls_cert}: "
                          f"{exc.strerror}") from None
    return args.tls_cert, args.tls_key


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a host name: it may resolve anywhere
        return False


def _resume_services(project: Any) -> list[Any]:
    """Open every EmailService at start (not on its first API call), so mails left queued
    by an earlier process are delivered now; says so for each service that has some."""
    from postline.logs import say
    from postline.service import open_services

    opened, failed = open_services(project)
    for name, why in failed.items():
        say(f"EmailService {name} is not running: {why}", level="WARNING")
    for name, svc in opened.items():
        counts = svc.outbox.counts(name)
        queued = counts[OutboxState.QUEUED] + counts[OutboxState.SENDING]   # the first may be on their way
        if queued and svc.delivers_outbox:
            say(f"EmailService {name}: delivering {queued} mail(s) queued before this start")
        elif queued:
            say(f"EmailService {name}: {queued} queued mail(s) are delivered by another "
                "postline process that holds its outbox")
    return list(opened.values())
