"""The argparse pieces every command module uses: :class:`HelpFormatter` (examples kept as
written) and :class:`Parser` (one-line usage errors). Apart from ``postline.cli`` so that the
command modules import them at the top, and ``postline.cli`` imports the command modules."""

from __future__ import annotations

import argparse
from typing import NoReturn


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-written examples in each command's epilog as they are, and shows a
    ``[PROJECT] NAME`` argument (:func:`postline.cli.output.add_target`) as written, not as
    argparse's ``X [X ...]`` for ``nargs="+"``, which reads like a repeatable argument."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if getattr(action, "shape_as_written", False):
            return str(action.metavar)
        return super()._format_args(action, default_metavar)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``postline send: error: ...; see 'postline send
    --help'`` on stderr and exit status 2 (argparse prints the whole usage text first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")

    def _check_value(self, action: argparse.Action, value) -> None:
        # argparse lists every choice (suggest_on_error came in 3.14); name the closest
        # one first. _check_value is argparse's one place that checks a choice.
        if action.choices is not None and value not in action.choices:
            import difflib

            choices = [str(c) for c in action.choices]
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise argparse.ArgumentError(action, f"invalid choice: '{value}' ({hint}choose "
                                                 f"from {', '.join(choices)})")
        super()._check_value(action, value)

    def parse_known_args(self, args=None, namespace=None):
        # A subcommand reports its own unrecognised arguments, so the line names it
        # ('postline ledger list --help'), not just 'postline'. Safe: a subparser is
        # handed every argument after its name, so what it leaves is not anyone's.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "postline":
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras
