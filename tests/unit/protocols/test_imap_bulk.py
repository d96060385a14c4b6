"""The bulk FETCH reader against scripted server bytes (no network)."""

from __future__ import annotations

import io

import pytest

from postline.errors import ProtocolError
from postline.protocols.imap_bulk import (
    BulkFetch,
    ResponseReader,
    internal_date_iso,
    plan,
    uid_set,
)


class FakeSock:
    """Hands out the scripted server bytes in small pieces, like TLS records."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self.data = data
        self.pos = 0
        self.piece = piece

    def recv_into(self, buf) -> int:
        n = min(len(buf), self.piece, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


class FakeRaw(io.RawIOBase):
    """imaplib's socket file: the first read goes through it."""

    def __init__(self, sock: FakeSock) -> None:
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        return self.sock.recv_into(buf)


def reader(server: bytes, piece: int = 7) -> tuple[ResponseReader, list[bytes]]:
    sent: list[bytes] = []
    sock = FakeSock(server, piece)
    return ResponseReader(io.BufferedReader(FakeRaw(sock)), sock, sent.append), sent


def fetch(uid: int, body: bytes, date: bytes = b"01-May-2024 12:00:00 +0200") -> bytes:
    return (b"* %d FETCH (UID %d RFC822.SIZE %d INTERNALDATE \"%s\" BODY[] {%d}\r\n"
            % (uid, uid, len(body), date, len(body)) + body + b")\r\n")


def test_uid_set_compresses_ranges():
    assert uid_set([7, 1, 2, 3, 9, 10]) == b"1:3,7,9:10"
    assert uid_set([5]) == b"5"


def test_internal_date_to_utc_iso():
    assert internal_date_iso(b"01-May-2024 12:00:00 +0200") == "2024-05-01T10:00:00Z"
    assert internal_date_iso(b" 1-May-2024 12:00:00 -0130") == "2024-05-01T13:30:00Z"
    assert internal_date_iso(b"garbage") is None


def test_plan_splits_by_count_and_bytes():
    items = [(i, i, 3) for i in range(10)]
    assert [len(c) for c in plan(items, max_mails=4, max_bytes=100)] == [4, 4, 2]
    assert [len(c) for c in plan(items, max_mails=100, max_bytes=7)] == [2, 2, 2, 2, 2]


def test_interleaved_responses_come_out_in_request_order_and_vanished_are_skipped(tmp_path):
    # Dovecot runs pipelined FETCHes in parallel: command 2's mail arrives first, uid 3 is
    # gone (its command ends without it), unrelated untagged responses are ignored.
    server = (fetch(4, b"four") + b"* 9 EXISTS\r\n" + fetch(1, b"one\r\nline two\r\n")
              + fetch(2, b"two") + b"PLF-A OK done\r\n" + b"PLF-B OK done\r\n")
    r, sent = reader(server)
    chunks = [[(1, "r1", 10), (2, "r2", 10)], [(3, "r3", 10), (4, "r4", 10)]]
    bulk = BulkFetch(r, chunks=chunks, items=b"(UID BODY.PEEK[])", body=True,
                     spool_dir=tmp_path, inline_limit=1000)
    bulk._send_more = _sender(bulk, iter([b"PLF-A", b"PLF-B"]))  # type: ignore[method-assign]
    got = [(ref, item.data, item.internal_date) for ref, item in bulk]
    assert got == [("r1", b"one\r\nline two\r\n", "2024-05-01T10:00:00Z"),
                   ("r2", b"two", "2024-05-01T10:00:00Z"),
                   ("r4", b"four", "2024-05-01T10:00:00Z")]
    assert len(sent) == 2 and sent[0].endswith(b" UID FETCH 1:2 (UID BODY.PEEK[])\r\n")


def _sender(bulk: BulkFetch, tags):
    """_send_more with fixed tags (the real one numbers them)."""
    def send_more() -> None:
        while bulk._todo:
            chunk = bulk._todo.popleft()
            tag = next(tags)
            bulk._r.send(tag + b" UID FETCH " + uid_set([u for u, _, _ in chunk])
                         + b" " + bulk._items + b"\r\n")
            bulk._tags[tag] = {u for u, _, _ in chunk}
            for uid, ref, weight in chunk:
                bulk._wanted[uid] = (ref, weight, tag)
                bulk._order.append(uid)
                bulk._in_flight += weight
    return send_more


def test_large_literal_is_spooled_to_a_file(tmp_path):
    big = bytes(range(256)) * 5000
    r, _ = reader(fetch(1, big) + b"PLF1 OK\r\n", piece=65536)
    bulk = BulkFetch(r, chunks=[[(1, "r1", len(big))]], items=b"(BODY.PEEK[])", body=True,
                     spool_dir=tmp_path, inline_limit=1000)
    bulk._send_more = _sender(bulk, iter([b"PLF1"]))  # type: ignore[method-assign]
    [(_, item)] = list(bulk)
    assert item.data is None and item.path is not None
    assert item.path.read_bytes() == big and item.path.stat().st_mode & 0o777 == 0o600


def test_refused_fetch_is_a_retriable_protocol_error(tmp_path):
    r, _ = reader(b"PLF1 NO [SERVERBUG] oops\r\n")
    bulk = BulkFetch(r, chunks=[[(1, "r1", 1)]], items=b"(BODY.PEEK[])", body=True,
                     spool_dir=tmp_path, inline_limit=1000)
    bulk._send_more = _sender(bulk, iter([b"PLF1"]))  # type: ignore[method-assign]
    with pytest.raises(ProtocolError, match="refused UID FETCH: PLF1 NO"):
        list(bulk)


def test_closed_connection_mid_literal_raises_eof(tmp_path):
    r, _ = reader(b"* 1 FETCH (UID 1 BODY[] {100}\r\nonly a bit")
    bulk = BulkFetch(r, chunks=[[(1, "r1", 1)]], items=b"(BODY.PEEK[])", body=True,
                     spool_dir=tmp_path, inline_limit=1000)
    bulk._send_more = _sender(bulk, iter([b"PLF1"]))  # type: ignore[method-assign]
    with pytest.raises(EOFError):
        list(bulk)


def test_drain_reads_everything_in_flight_and_iteration_resumes(tmp_path):
    server = fetch(1, b"a") + fetch(2, b"b") + b"PLF1 OK\r\n"
    r, _ = reader(server)
    bulk = BulkFetch(r, chunks=[[(1, "r1", 1), (2, "r2", 1)]], items=b"(BODY.PEEK[])",
                     body=True, spool_dir=tmp_path, inline_limit=1000)
    bulk._send_more = _sender(bulk, iter([b"PLF1"]))  # type: ignore[method-assign]
    it = iter(bulk)
    assert next(it)[1].data == b"a"
    bulk.drain()                    # another command wants the connection now
    assert not bulk._tags
    assert [item.data for _, item in it] == [b"b"]
