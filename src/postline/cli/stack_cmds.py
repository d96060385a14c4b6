"""``postline dev-stack install|start|stop|status|env``: the local mail stack for tests and demos."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from postline.cli.parsing import HelpFormatter
from postline.errors import PostlineError

DEFAULT_DIR = ".devstack"
DEMO_KEY = "demo.key"   # the private key of `make demo`'s project (scripts/demo.sh)

EPILOG = """\
Examples:
  postline dev-stack install                 # npm packages of the local OAuth server (once)
  postline dev-stack start                   # in ./.devstack, ports 10143 (imap) ... 18443 (oidc)
  postline dev-stack start --dir /tmp/s2 --base-port 20000   # a second stack beside the first
  eval "$(postline dev-stack env)"           # POSTLINE_STACK_* variables for a project's macros,
                                             # POSTLINE_STATE_URL of the stack's PostgreSQL
                                             # (and POSTLINE_KEY_FILE after `make demo`)
  postline dev-stack status
  postline dev-stack stop

Debian packages (dovecot-*, postfix, postgresql) are installed by scripts/bootstrap.sh.
Users: any <name>@example.test with password <name>-pass. Docs: docs/dev-stack.md
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dev-stack`` command group."""

    group = subparsers.add_parser(
        "dev-stack", help="start/stop the local mail stack (Dovecot, Postfix, oidc-provider, "
                          "PostgreSQL)",
        description="A local mail stack on 127.0.0.1 for tests and demos: Dovecot (IMAP, POP3, "
                    "LMTP), Postfix (submission), smtp-sink, an OAuth server (oidc-provider) "
                    "and PostgreSQL (for a StateStore).",
        formatter_class=HelpFormatter, epilog=EPILOG)
    sub = group.add_subparsers(dest="stack_command", metavar="ACTION")
    group.set_defaults(handler=lambda args: (group.print_help(sys.stderr), 2)[1])

    p = sub.add_parser("install", help="install the OAuth server's npm packages (idempotent)",
                       formatter_class=HelpFormatter,
                       epilog="Examples:\n  postline dev-stack install\n"
                              "  postline dev-stack install --quiet      # no output unless it fails\n")
    p.add_argument("--quiet", action="store_true", help="print nothing when all is well")
    p.set_defaults(handler=cmd_install)

    p = sub.add_parser("start", help="start the stack (prints its status when already running)",
                       formatter_class=HelpFormatter,
                       epilog="Examples:\n  postline dev-stack start\n"
                              "  postline dev-stack start --dir /tmp/stack2 --base-port 20000\n"
                              "  postline dev-stack start --random-ports --json\n")
    _dir_arg(p)
    ports = p.add_mutually_exclusive_group()
    ports.add_argument("--base-port", type=int, default=None,
                       help="fixed ports from this base: imap BASE+143, smtp BASE+587, oidc "
                            "BASE+8443, postgres BASE+5432 ... (default 10000)")
    ports.add_argument("--random-ports", action="store_true", help="let the kernel choose free ports")
    p.add_argument("--token-ttl", type=int, default=3600, metavar="SECONDS",
                   help="lifetime of access tokens from the OAuth server (default 3600)")
    p.add_argument("--json", action="store_true", help="print the stack's details as JSON")
    p.set_defaults(handler=cmd_start)

    p = sub.add_parser("stop", help="stop the servers this stack started",
                       formatter_class=HelpFormatter,
                       epilog="Examples:\n  postline dev-stack stop\n  postline dev-stack stop --dir /tmp/stack2\n")
    _dir_arg(p)
    p.set_defaults(handler=cmd_stop)

    p = sub.add_parser("status", help="show what runs and where (exit 1 when not running)",
                       formatter_class=HelpFormatter,
                       epilog="Examples:\n  postline dev-stack status\n  postline dev-stack status --json\n")
    _dir_arg(p)
    p.add_argument("--json", action="store_true", help="print the stack's details as JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("env", help="print export lines (POSTLINE_STACK_*, POSTLINE_STATE_URL, "
                                   "and the demo's POSTLINE_KEY_FILE) for a shell",
                       formatter_class=HelpFormatter,
                       epilog='Examples:\n  eval "$(postline dev-stack env)"\n'
                              '  postline dev-stack env --dir /tmp/stack2 > stack.env\n')
    _dir_arg(p)
    p.set_defaults(handler=cmd_env)


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=Path(DEFAULT_DIR),
                   help=f"stack directory: configs, certificates, mail, logs (default ./{DEFAULT_DIR})")


def _cache_dir() -> Path:
    from postline.testing.install import default_cache_dir

    return default_cache_dir(os.environ)


def cmd_install(args: argparse.Namespace) -> int:
    from postline.testing import install

    version = install.install_oidc_deps(_cache_dir(), quiet=args.quiet)
    missing = install.missing_packages()
    if not args.quiet:
        print(f"oidc-provider {version} installed in {install.oidc_home(_cache_dir())}")
    if missing:
        print(f"postline: warning: Debian package(s) still missing: {', '.join(missing)}; "
              f"install them with {install.BOOTSTRAP}", file=sys.stderr)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from postline.testing import install
    from postline.testing.ports import DEFAULT_BASE_PORT
    from postline.testing.stack import Stack

    cache = _cache_dir()
    if not install.installed_oidc_version(cache) and not install.missing_packages():
        install.install_oidc_deps(cache, quiet=args.json)
    base = None if args.random_ports else (args.base_port or DEFAULT_BASE_PORT)
    stack = Stack(dir=args.dir, base_port=base, cache_dir=cache, access_token_ttl=args.token_ttl)
    before = stack.status()
    began = time.monotonic()
    info = stack.start()
    took = time.monotonic() - began
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    if before.running:
        print(f"already running (stop it first to change ports: postline dev-stack stop "
              f"--dir {args.dir})")
    else:
        print(f"started in {took:.1f} s")
    print(describe(stack.status()))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from postline.testing.stack import Stack

    stack = Stack(dir=args.dir, cache_dir=_cache_dir())
    if stack.stop():
        print(f"stopped the dev stack in {stack.dir}")
    else:
        print(f"nothing running in {stack.dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from postline.testing.stack import Stack

    status = Stack(dir=args.dir, cache_dir=_cache_dir()).status()
    if args.json:
        print(json.dumps({"running": status.running,
                          "servers": {s.name: {"running": s.running, "pid": s.pid,
                                               "open_ports": list(s.open_ports)}
                                      for s in status.servers},
                          "info": status.info.to_json() if status.info else None}, indent=2))
    elif status.info is not None:
        print(describe(status))
    if not status.running:
        down = [s.name for s in status.servers if not s.healthy]
        why = f"not running: {', '.join(down)}" if status.anything_running else "not running"
        raise PostlineError(f"dev stack in {status.dir} is {why}",
                            hint=f"start it with: postline dev-stack start --dir {args.dir}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from postline.testing.stack import Stack

    status = Stack(dir=args.dir, cache_dir=_cache_dir()).status()
    if status.info is None or not status.running:
        raise PostlineError(f"no running dev stack in {status.dir}",
                            hint=f"start it with: postline dev-stack start --dir {args.dir}")
    for key, value in env_vars(status.info).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def env_vars(info) -> dict[str, str]:
    """The POSTLINE_STACK_* variables of a stack (``info`` is a StackInfo), POSTLINE_STATE_URL
    when it runs PostgreSQL, and POSTLINE_KEY_FILE when the stack directory holds the demo
    project's key."""
    env = {"POSTLINE_STACK_DIR": str(info.dir), "POSTLINE_STACK_HOST": info.host}
    for name, port in info.ports.items():
        env[f"POSTLINE_STACK_{name.upper()}_PORT"] = str(port)
    env.update({
        "POSTLINE_STACK_CA_FILE": str(info.ca_file),
        "POSTLINE_STACK_OIDC_AUTHORITY": info.oidc_authority,
        "POSTLINE_STACK_OIDC_ISSUER": info.oidc_issuer,
        "POSTLINE_STACK_CC_CLIENT_ID": info.cc_client_id,
        "POSTLINE_STACK_CC_CLIENT_SECRET": info.cc_client_secret,
        "POSTLINE_STACK_CC_MAILBOX": info.cc_mailbox,
        "POSTLINE_STACK_DEVICE_CLIENT_ID": info.device_client_id,
        "POSTLINE_STACK_MAIL_SCOPES": " ".join(info.mail_scopes),
        "POSTLINE_STACK_USER": "alice@example.test",
        "POSTLINE_STACK_PASSWORD": info.password("alice@example.test"),
    })
    url = getattr(info, "postgres_url", None)   # None: started without PostgreSQL
    if url:   # the StateStore URL of a project (docs/cluster.md)
        env["POSTLINE_STATE_URL"] = url
    # `make demo` seals the demo project's password to a key kept beside the stack; without
    # it every command on the demo project that needs the password fails
    demo_key = Path(info.dir) / DEMO_KEY
    if demo_key.is_file():
        env["POSTLINE_KEY_FILE"] = str(demo_key.resolve())
    return env


def describe(status) -> str:
    """A human summary of a StackStatus: servers, ports, users, CA, OAuth, logs."""
    from postline.testing.ports import DESCRIPTIONS

    info = status.info
    lines = [f"dev stack in {status.dir}: {'running' if status.running else 'NOT running'}"]
    for server in status.servers:
        state = f"pid {server.pid}" if server.running else "stopped"
        for name, port in server.ports.items():
            mark = "" if name in server.open_ports else "  (port closed)"
            lines.append(f"  {name:<10} {info.host}:{port:<6} {DESCRIPTIONS[name]} [{server.name}, "
                         f"{state}]{mark}")
    lines += [
        "Users:     any <name>@example.test, password <name>-pass "
        "(e.g. alice@example.test / alice-pass)",
        f"CA file:   {info.ca_file}",
        f"OAuth:     authority {info.oidc_authority} (issuer {info.oidc_issuer})",
        f"           client credentials: {info.cc_client_id} / {info.cc_client_secret} "
        f"(tokens for {info.cc_mailbox}); device flow: {info.device_client_id}; "
        f"scopes: {' '.join(info.mail_scopes)}",
        *([f"State:     POSTLINE_STATE_URL={info.postgres_url}"]
          if getattr(info, "postgres_url", None) else []),
        f"Logs:      {info.dir / 'logs'}/",
        f"Use:       eval \"$(postline dev-stack env --dir {status.dir})\"",
    ]
    return "\n".join(lines)
