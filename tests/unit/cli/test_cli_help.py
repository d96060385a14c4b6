"""Every command's ``--help`` ends with an ``Examples:`` section of real command lines.

The commands are enumerated from the parser itself, so a new command group is checked
without anyone remembering to add it here.
"""

from __future__ import annotations

import argparse

import pytest

from postline.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_group_of_the_top_level_help_is_enumerated():
    top = {path[0] for path in COMMANDS if path}
    assert {"validate", "assets", "show", "usage", "keys", "secret", "test-connection", "login",
            "run", "ledger", "send", "outbox", "serve", "dev-stack"} <= top


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "postline")
def test_help_has_examples(capsys, path):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "\nExamples:\n" in out, out
    examples = out.split("\nExamples:\n", 1)[1]
    wanted = "postline " + (path[0] if path else "")
    assert any(line.strip().startswith(wanted) for line in examples.splitlines()), examples
