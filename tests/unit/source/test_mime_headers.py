"""The header block ends at the first empty line, whichever line ending the mail uses."""

from __future__ import annotations

import pytest

from postline.source.mime import read_headers


@pytest.mark.parametrize("raw, body", [
    (b"A: 1\nB: 2\n\nbody\n\r\nmore", b"body\n\r\nmore"),
    (b"A: 1\r\nB: 2\r\n\r\nbody\n\nmore", b"body\n\nmore"),
    (b"A: 1\nB: 2\r\n\r\nbody", b"body"),
    (b"A: 1\r\nB: 2\n\nbody", b"body"),
    (b"A: 1\nB: 2\n", b""),
])
def test_header_block_end(raw, body):
    defects: list[str] = []
    headers, start = read_headers(raw, 0, len(raw), defects)
    assert headers == [("A", "1"), ("B", "2")]
    assert raw[start:] == body
    assert defects == []


def _blocks():
    import itertools
    import random

    lines = [b"Subject: plain", b"Subject:  spaced value  ", b"X-Folded: one", b" two",
             b"\tthree", b"To: a@b, c@d", b"Empty:", b"From x@y Mon Jan 1", b"no colon line",
             b"Bad Name: v", b"K:v:w", b"  ", b"\r", b"Caf\xc3\xa9: x", b"Subj: caf\xc3\xa9",
             b"Subj: \xe9t\xe9", b"A\tB: c"]
    rng = random.Random(5)
    for n, eol in itertools.product(range(1, 6), (b"\r\n", b"\n")):
        for _ in range(60):
            yield eol.join(rng.choice(lines) for _ in range(n)) + eol


def test_fast_header_lines_agree_with_the_line_by_line_reader():
    from postline.source.mime import _header_lines, _header_lines_ascii

    checked = 0
    for block in _blocks():
        fast = _header_lines_ascii(block)
        if fast is None:
            continue     # not a case for the fast path: the careful reader takes it
        defects: list[str] = []
        assert fast == _header_lines(block, defects), block
        assert defects == []
        checked += 1
    assert checked > 100
