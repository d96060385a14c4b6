"""The ``postline`` command line: ``main(argv=None) -> int``.

Each command group lives in its own module of this package and exposes
``register(subparsers)``, adding its subcommands with ``set_defaults(handler=fn)`` where
``fn(args) -> int``. To add a command group, write the module, import it here and list it in
``COMMAND_MODULES``. Handlers raise :class:`postline.errors.PostlineError`; ``main`` prints
it as one line on stderr and returns 1, so handlers never print tracebacks. A usage error
(an unknown option, a missing argument) is one line too, with exit status 2. An ``OSError``
(disk full, permissions) or any other unexpected exception is printed as one line too; the
traceback only with ``-vv``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from postline.cli import (
    cluster_cmds,
    connection_cmds,
    ledger_cmds,
    project_cmds,
    secret_cmds,
    service_cmds,
    source_cmds,
    stack_cmds,
    state_cmds,
    try_cmd,
)
from postline.cli.parsing import HelpFormatter, Parser
from postline.errors import MessageError, PostlineError, ValidationFailed
from postline.version import __version__

# Order = order in --help.
COMMAND_MODULES = [
    project_cmds,     # validate, assets, show, usage
    secret_cmds,      # keys create, secret set/list
    connection_cmds,  # test-connection, login
    source_cmds,      # run
    try_cmd,          # try
    ledger_cmds,      # ledger list/reset/prune/retry
    service_cmds,     # send, outbox, serve
    state_cmds,       # state migrate (a StateStore on PostgreSQL)
    cluster_cmds,     # cluster status (a fleet on a StateStore)
    stack_cmds,       # dev-stack start/stop/status
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="postline", formatter_class=HelpFormatter,
        description="Move email in and out of data pipelines.",
        epilog="Examples:\n  postline validate examples/local\n"
               "  postline run examples/local --once\n\n"
               "Run 'postline COMMAND --help' for the examples of each command.")
    parser.add_argument("--version", action="version", version=f"postline {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="log lines as text (default) or one JSON object per line "
                             "(default from POSTLINE_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    _accept_verbose_everywhere(parser)
    _upper_case_metavars(parser)
    return parser


def _upper_case_metavars(parser: argparse.ArgumentParser) -> None:
    """Positional arguments read ``PROJECT NAME`` in every usage line, as in the docs; a
    command group without its action (``postline ledger``) is a one-line usage error."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = parser.prog != "postline"   # bare `postline` prints the help
            for child in action.choices.values():
                _upper_case_metavars(child)
        elif not action.option_strings and action.metavar is None:
            action.metavar = action.dest.upper()


def _accept_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``-v`` follow any (sub)command too: ``postline run P --once -v``.

    SUPPRESS keeps a subcommand's default from overwriting a ``-v`` given before it.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("-v" in a.option_strings for a in child._actions):
                    child.add_argument("-v", "--verbose", action="count",
                                       default=argparse.SUPPRESS,
                                       help="more log output (-vv for debug)")
                if not any("--log-format" in a.option_strings for a in child._actions):
                    child.add_argument("--log-format", choices=("text", "json"),
                                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _accept_verbose_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    import os

    from postline.logs import say, setup_logging

    fmt = args.log_format or os.environ.get("POSTLINE_LOG_FORMAT", "text").strip().lower()
    if fmt not in ("text", "json"):
        setup_logging(args.verbose)
        say(f"postline: error: POSTLINE_LOG_FORMAT={fmt!r}: expected text or json",
            level="ERROR")
        return 2
    setup_logging(args.verbose, fmt)
    try:
        return int(args.handler(args) or 0)
    except ValidationFailed as exc:
        for problem in exc.problems:
            _say(str(problem))
        _say(f"postline: {exc}")
        return 1
    except PostlineError as exc:  # an expected failure, worded for the user: no traceback
        several = exc.problems if isinstance(exc, MessageError) else ()
        if len(several) > 1:  # every problem of a message to send: one line each
            for problem in several:
                _say(f"postline: error: {problem}")
            _say(f"postline: error: {len(several)} problems; nothing was sent")
            return 1
        _say(f"postline: error: {exc}")
        return 1
    except BrokenPipeError:
        # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _say("postline: interrupted")
        return 130
    except OSError as exc:
        # disk full, permissions, a missing file: the environment, not a bug; one line
        from postline.errors import os_error_message

        _traceback_if_debug(args)
        _say(f"postline: error: {os_error_message(exc)}")
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with -vv
        _traceback_if_debug(args)
        first = (str(exc).splitlines() or [""])[0]
        _say(f"postline: error: unexpected {type(exc).__name__}: {first}"
             + ("" if _debug(args) else " (run with -vv for the traceback)"))
        return 1


def _say(line: str) -> None:
    """Print one line on stderr, with every registered secret masked (a safety net)."""
    from postline.logs import say

    # one line even when a server's multi-line answer ended up in the message
    say(line, level="ERROR")


def _debug(args: argparse.Namespace) -> bool:
    return getattr(args, "verbose", 0) >= 2


def _traceback_if_debug(args: argparse.Namespace) -> None:
    """With -vv, the traceback of the exception being handled (secrets masked)."""
    if _debug(args):
        import traceback

        from postline.logs import redact

        sys.stderr.write(redact(traceback.format_exc()))


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


_ = logging  # logging is configured in postline.logs
