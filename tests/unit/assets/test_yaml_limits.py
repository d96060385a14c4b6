"""Asset files made to take `postline validate` down (a pull-request check runs it): an
alias bomb and a huge file are refused with one line naming the file (issue 15, item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from postline.assets.yamlfiles import MAX_FILE_BYTES, MAX_VALUES

BOMB = """kind: Environment
name: Bomb
variables:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
""" + "".join(
    f"  {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=False))


def validate(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "postline", "validate", str(root)],
                          capture_output=True, text=True)


def error_lines(res: subprocess.CompletedProcess, shown: str) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith(shown)]


@pytest.mark.timeout(60)
def test_a_nine_level_alias_bomb_is_refused_in_one_line(tmp_path):
    assert BOMB.count("&") == 9
    (tmp_path / "bomb.yaml").write_text(BOMB)
    res = validate(tmp_path)
    assert res.returncode == 1
    [line] = error_lines(res, str(tmp_path / "bomb.yaml"))
    assert line == (f"{tmp_path / 'bomb.yaml'}:1: the file expands to more than "
                    f"{MAX_VALUES:,} values through its aliases (*name); write the values "
                    "out, or use fewer aliases")
    assert "1 error(s)" in res.stderr


@pytest.mark.timeout(60)
def test_a_50_mb_file_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.write(b"kind: Environment\nname: Big\nvariables:\n")
        line = b"  k: " + b"x" * 1000 + b"\n"
        f.write(line * (50_000_000 // len(line)))
    res = validate(tmp_path)
    assert res.returncode == 1
    [line] = error_lines(res, str(big))
    assert line == (f"{big}:1: file is 50.0 MB, over the limit of "
                    f"{MAX_FILE_BYTES // 1024} KB for an asset file; split it into several "
                    "files")


def test_aliases_within_the_limit_still_work(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "kind: Environment\nname: E\ndescription: &d words\n"
        "variables: {A: *d, B: *d}\n")
    res = validate(tmp_path)
    assert res.returncode == 0, res.stderr
