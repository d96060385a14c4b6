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
