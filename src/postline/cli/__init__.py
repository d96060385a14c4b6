"""The ``postline`` command line: ``main(argv=None) -> int``.

Each command group lives in its own module of this package and exposes
``register(subparsers)``, adding its subcommands with ``set_defaults(handler=fn)`` where
``fn(args) -> int``. To add a command group, write the module and list it in
``COMMAND_MODULES``. Handlers raise :class:`postline.errors.PostlineError`; ``main`` prints
it as one line on stderr and returns 1, so handlers never print tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from postline import __version__
from postline.errors import PostlineError, ValidationFailed

# Order = order in --help.
COMMAND_MODULES = [
    "postline.cli.project_cmds",     # validate, assets, show, usage
    "postline.cli.secret_cmds",      # keys create, secret set/list
    "postline.cli.connection_cmds",  # test-connection, login
    "postline.cli.source_cmds",      # run, ledger
    "postline.cli.service_cmds",     # send, outbox, serve
    "postline.cli.stack_cmds",       # dev-stack start/stop/status
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-written examples in each command's epilog as they are."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postline", formatter_class=HelpFormatter,
        description="Move email in and out of data pipelines.",
        epilog="Examples:\n  postline validate examples/local\n"
               "  postline run examples/local --once\n\n"
               "Run 'postline COMMAND --help' for the examples of each command.")
    parser.add_argument("--version", action="version", version=f"postline {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # group not written yet
                continue
            raise
        module.register(sub)
    _accept_verbose_everywhere(parser)
    return parser


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
                _accept_verbose_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    from postline.logs import setup_logging

    setup_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except ValidationFailed as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        print(f"postline: {exc}", file=sys.stderr)
        return 1
    except PostlineError as exc:
        print(f"postline: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # output piped into e.g. `head`, which stopped reading: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("postline: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


_ = logging  # logging is configured in postline.logs
