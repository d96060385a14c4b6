"""A `UID SEARCH ALL` of a big folder answers in one line of several MB; imaplib's own limit
(1 MB) made folders of ~150,000 mails and more impossible to list (found by
bench/scale.py at a million mails)."""

from __future__ import annotations

import io

import pytest

from postline.protocols.imap import _IMAP4OnSocket


def _imap_reading(data: bytes) -> _IMAP4OnSocket:
    imap = object.__new__(_IMAP4OnSocket)   # no connection: only its line reader is used
    imap.file = io.BytesIO(data)
    return imap


def test_a_search_answer_for_a_million_uids_is_read():
    line = b"* SEARCH " + b" ".join(str(u).encode() for u in range(1, 1_000_001)) + b"\r\n"
    assert len(line) > 6_000_000
    assert _imap_reading(line + b"A1 OK done\r\n").readline() == line


def test_a_line_beyond_the_limit_is_still_refused(monkeypatch):
    monkeypatch.setattr(_IMAP4OnSocket, "MAX_LINE", 100)
    with pytest.raises(_IMAP4OnSocket.error, match="got more than 100 bytes"):
        _imap_reading(b"* " + b"x" * 200 + b"\r\n").readline()
