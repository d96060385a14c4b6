"""Shared output helpers of the command line: Rich consoles and JSON printing."""

from __future__ import annotations

import json
import sys

from postline.errors import ConfigError

# Wide enough that tables piped into files or grep never wrap or truncate a cell.
PIPE_WIDTH = 1000


def console(stderr: bool = False):
    """A Rich console on stdout (or stderr); terminal width on a TTY, else never wrapping."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else PIPE_WIDTH, highlight=False,
                   soft_wrap=not tty)


def cells(*values: str):
    """Table cells shown as they are: Rich would read ``[x]`` and ``\\[`` in a subject, a
    reason or a regex as markup (``\\[spam\\]`` printed as ``[spam\\]``)."""
    from rich.text import Text

    return [Text(v) for v in values]


def print_json(data) -> None:
    """Print ``data`` as indented JSON on stdout (non-ASCII kept readable)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def add_target(parser, what: str, help: str) -> None:
    """Add the ``[PROJECT] WHAT`` positional (read back with :func:`project_and_name`).

    ``nargs="+"`` because argparse (before 3.12) cannot parse an optional positional in
    front of a required one when options come first; the usage line shows it as written.
    """
    action = parser.add_argument("target", nargs="+", metavar=f"[PROJECT] {what}",
                                 help=f"{help}; PROJECT is the project directory "
                                      "(default: .)")
    action.shape_as_written = True


def project_and_name(values: list[str], *, what: str, example: str) -> tuple[str, str]:
    """``[PROJECT] NAME`` from a ``nargs="+"`` argument: PROJECT defaults to ``.``.

    Raises ConfigError naming ``what`` (e.g. ``SERVICE``) with ``example`` as the hint.
    """
    if len(values) == 1:
        return ".", values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ConfigError(f"expected [PROJECT] {what}", hint=f"e.g. {example}")
