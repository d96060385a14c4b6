"""Bulk ``UID FETCH`` on the already authenticated IMAP socket, read without imaplib.

Why not IMAPClient/imaplib here: imaplib reads a response line by line and IMAPClient then
lexes every token in Python. Fetching the 5,000-mail (300 MB) bench mailbox that way took
~1 s of CPU on top of the ~0.4 s the TLS reads themselves cost, against a target of 3x the
raw-transfer floor for the whole ingest. Here the response is read in large chunks with
``recv_into`` into one buffer, and literals (``{n}\\r\\n`` then n octets) are cut out with
``bytes.find`` and memoryview slices: a few Python steps per message, not per line.

Commands are pipelined: up to ``ahead_bytes`` of requested mail is in flight, so Dovecot
keeps producing (into the kernel's socket buffers) while the caller parses what arrived.
That overlaps server and client work without a reader thread: a thread doing the TLS reads
(Dovecot sends ~4 KB records, ~75,000 for 300 MB) would need the GIL back after every one
and convoy with the parsing thread (the earlier prefetch thread showed exactly that: the
main thread's short I/O calls waited on the GIL).

Messages larger than ``inline_limit`` are streamed to a spool file as they arrive; memory
stays at one read buffer per connection whatever the size.

Only the reader's own session uses this, between IMAPClient commands: before any other
command the reader calls :meth:`BulkFetch.drain`, which reads every outstanding response
(so imaplib never sees FETCH data it did not ask for).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from postline.errors import ProtocolError
from postline.protocols.spool import open_spool

READ_CHUNK = 1 << 20            # bytes asked per read (TLS gives <= 16 KB a call)
COMMAND_MAX_MAILS = 250         # UIDs per pipelined UID FETCH
COMMAND_MAX_BYTES = 8 << 20     # requested octets per UID FETCH (by RFC822.SIZE)
AHEAD_BYTES = 24 << 20          # octets requested but not yet read (kernel buffers hold it)
_DIRECT_MIN = READ_CHUNK // 4   # free space kept for each read

_TAGS = itertools.count(1)
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_UID = re.compile(rb"[( ]UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_DATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_BODY_AT_END = re.compile(rb"BODY\[\](?:<0>)? \{\d+\}\r\n$")
_MONTHS = {m: i + 1 for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
     b"Dec"))}


def uid_set(uids: Sequence[int]) -> bytes:
    """``[1,2,3,7]`` -> ``b"1:3,7"`` (sorted, ranges compressed)."""
    out: list[str] = []
    ordered = sorted(uids)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(out).encode()


def internal_date_iso(raw: bytes) -> str | None:
    """``b"01-May-2024 12:00:00 +0200"`` -> ``"2024-05-01T10:00:00Z"`` (ISO-8601 UTC, the
    record's form); None if odd."""
    try:
        date, time_, zone = raw.strip().split(b" ")
        d, mon, y = date.split(b"-")
        hh, mm, ss = time_.split(b":")
        sign = -1 if zone[:1] == b"-" else 1
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
        value = dt.datetime(int(y), _MONTHS[mon], int(d), int(hh), int(mm), int(ss)) - offset
    except (ValueError, KeyError, OverflowError):
        return None
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z")


@dataclass
class Fetched:
    """One FETCH response: its attributes and, where asked, the body (bytes or spool)."""

    uid: int | None
    size: int | None = None
    internal_date: str | None = None
    flags: tuple[str, ...] = ()
    data: bytes | bytearray | None = None
    path: Path | None = None


class ResponseReader:
    """Reads IMAP responses from the socket in large chunks.

    ``file`` is imaplib's ``sock.makefile("rb")``: its first read takes whatever it holds
    already, after which it is empty and ``sock.recv_into`` is called directly (a TLS
    socket returns at most one record a call: Dovecot sends ~4 KB records, ~75,000 for
    300 MB, so every layer less counts; see tls_bio.py for the socket itself). ``send``
    writes a command line. Raises EOFError when the server closes.
    """

    def __init__(self, file: Any, sock: Any, send: Callable[[bytes], None]) -> None:
        self._file = file
        self._recv_into = sock.recv_into
        self._primed = False
        self.send = send
        self._buf = bytearray(2 * READ_CHUNK)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _fill(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buf) - self._end < _DIRECT_MIN:
            # keep the unread tail at the front; it is short (a partial line)
            n = self._end - self._start
            self._buf[:n] = self._mv[self._start:self._end]
            self._start, self._end = 0, n
            if len(self._buf) - n < _DIRECT_MIN:  # one very long line: grow
                self._buf.extend(bytes(len(self._buf)))
                self._mv.release()
                self._mv = memoryview(self._buf)
        self._end += self._read(self._mv[self._end:])

    def _read(self, into: memoryview) -> int:
        if self._primed:
            k = self._recv_into(into)
        else:
            # read1 returns what imaplib's buffer holds, else does one raw read; either
            # way the buffer is empty afterwards
            data = self._file.read1(len(into))
            k = len(data)
            into[:k] = data
            self._primed = True
        if not k:
            raise EOFError("the server closed the connection")
        return k

    def line(self) -> bytes:
        """The next line including its CRLF."""
        while True:
            i = self._buf.find(b"\n", self._start, self._end)
            if i >= 0:
                out = bytes(self._mv[self._start:i + 1])
                self._start = i + 1
                return out
            self._fill()

    def literal(self, n: int) -> bytes | bytearray:
        """The next ``n`` octets: bytes when they are in the read buffer already, else a
        bytearray read straight into (one copy less than ``bytes`` of it would cost)."""
        have = self._end - self._start
        if have >= n:
            out = bytes(self._mv[self._start:self._start + n])
            self._start += n
            return out
        target = bytearray(n)
        tv = memoryview(target)
        tv[:have] = self._mv[self._start:self._end]
        self._start = self._end = 0
        got = have
        read = self._read
        while n - got > _DIRECT_MIN:   # straight into the target while much is missing
            got += read(tv[got:])
        while got < n:
            if self._start == self._end:
                self._fill()
            take = min(n - got, self._end - self._start)
            tv[got:got + take] = self._mv[self._start:self._start + take]
            self._start += take
            got += take
        tv.release()
        return target

    def literal_to(self, n: int, out: BinaryIO) -> None:
        """Stream the next ``n`` octets to ``out`` in chunks of about 1 MB."""
        left = n
        while left:
            if self._start == self._end:
                self._fill()
            take = min(left, self._end - self._start)
            out.write(self._mv[self._start:self._start + take])
            self._start += take
            left -= take

    def response(self, on_literal: Callable[[bytes, int], Any]) -> tuple[bytes, list[Any]]:
        """One whole response: its text (literals left out) and what ``on_literal(text_so_far,
        n)`` returned for each literal."""
        text = self.line()
        if not text.endswith(b"}\r\n"):
            return text, []
        parts = [text]
        got: list[Any] = []
        while True:
            m = _LITERAL.search(parts[-1])
            if m is None:
                return b"".join(parts), got
            got.append(on_literal(parts[-1], int(m.group(1))))
            parts.append(self.line())


class BulkFetch:
    """Pipelined ``UID FETCH`` of many messages of the selected folder.

    ``chunks`` are lists of ``(uid, ref, expected_size)``, each fetched by one command;
    ``items`` the FETCH items (with ``BODY.PEEK[]`` when ``body``). :meth:`__iter__` yields
    ``(ref, Fetched)`` per message the server returned, in the order of ``chunks``
    (vanished UIDs are skipped).

    Dovecot runs pipelined FETCH commands in parallel and interleaves their responses, so
    responses are matched by UID against every command in flight, and held back until the
    messages before them have arrived (or their command ended without them): at most
    ``ahead_bytes`` of mail.
    """

    def __init__(self, reader: ResponseReader, *, chunks: list[list[tuple[int, Any, int]]],
                 items: bytes, body: bool, spool_dir: Path | None = None,
                 inline_limit: int = 0, ahead_bytes: int = AHEAD_BYTES,
                 where: str = "IMAP server") -> None:
        self._r = reader
        self._todo = deque(chunks)
        self._items = items
        self._body = body
        self._spool = spool_dir
        self._inline = inline_limit
        self._ahead = ahead_bytes
        self._where = where
        self._wanted: dict[int, tuple[Any, int, bytes]] = {}   # uid -> (ref, weight, tag)
        self._tags: dict[bytes, set[int]] = {}                # tag -> uids not yet seen
        self._order: deque[int] = deque()                       # uids asked, in order
        self._got: dict[int, tuple[Any, Fetched]] = {}
        self._in_flight = 0
        self.active = True

    # -- commands -------------------------------------------------------------------------

    def _send_more(self) -> None:
        while self._todo and (not self._tags or self._in_flight < self._ahead):
            chunk = self._todo.popleft()
            tag = b"PLF%d" % next(_TAGS)
            self._r.send(tag + b" UID FETCH " + uid_set([uid for uid, _, _ in chunk])
                         + b" " + self._items + b"\r\n")
            self._tags[tag] = {uid for uid, _, _ in chunk}
            for uid, ref, weight in chunk:
                self._wanted[uid] = (ref, weight, tag)
                self._order.append(uid)
                self._in_flight += weight

    def _read_one(self, keep: bool) -> None:
        """Read one response: a FETCH of ours (kept in ``_got`` unless not ``keep``), the
        end of one of our commands, or something else (dropped)."""
        text, bodies = self._r.response(self._on_literal)
        if text.startswith(b"PLF"):
            tag, _, rest = text.partition(b" ")
            left = self._tags.pop(tag, None)
            if left is None:
                return
            for uid in left:  # vanished meanwhile (or not there): skipped
                self._in_flight -= self._wanted.pop(uid)[1]
            if (rest.split(None, 1) or [b""])[0].upper() != b"OK":
                raise ProtocolError(
                    f"{self._where} refused UID FETCH: "
                    f"{text.decode('utf-8', 'replace').strip()[:200]}",
                    hint="the folder may have changed; it is listed again next round",
                    disposition="retriable")
            return
        if text.startswith(b"* BYE"):
            raise EOFError(text.decode("utf-8", "replace").strip())
        item = parse_fetch(text, bodies) if b" FETCH (" in text[:40] else None
        want = self._wanted.get(item.uid) if item is not None else None  # type: ignore[union-attr]
        if want is None or (self._body and item.data is None and item.path is None):
            for b in bodies:  # EXISTS, EXPUNGE, flag updates ...: not ours to keep
                _discard(b)
            return
        ref, weight, tag = self._wanted.pop(item.uid)  # type: ignore[union-attr]
        self._tags[tag].discard(item.uid)  # type: ignore[union-attr]
        self._in_flight -= weight
        if keep:
            self._got[item.uid] = (ref, item)  # type: ignore[union-attr,index]
        elif item.path is not None:  # type: ignore[union-attr]
            item.path.unlink(missing_ok=True)  # type: ignore[union-attr]

    def _on_literal(self, text: bytes, n: int) -> Any:
        if not self._body or _BODY_AT_END.search(text) is None:
            self._r.literal_to(n, _NULL)  # a literal we did not ask for: skip it
            return None
        if n <= self._inline or self._spool is None:
            return self._r.literal(n)
        uid = _UID.search(text)
        out, path = open_spool(self._spool, f"imap-{uid.group(1).decode() if uid else 'x'}")
        try:
            with out:
                self._r.literal_to(n, out)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    # -- the caller's side ------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[Any, Fetched]]:
        order, got, wanted = self._order, self._got, self._wanted
        try:
            while True:
                while order:
                    uid = order[0]
                    if uid in got:
                        order.popleft()
                        yield got.pop(uid)
                    elif uid not in wanted:   # its command ended without it
                        order.popleft()
                    else:
                        break
                if not self._tags and not self._todo:
                    return
                self._send_more()
                self._read_one(keep=True)
        finally:
            self.close()

    def drain(self) -> None:
        """Read every outstanding response now (kept for :meth:`__iter__`); no new command
        is sent until the iteration resumes. Lets the session run another command."""
        while self._tags:
            self._read_one(keep=True)

    def close(self) -> None:
        """Stop: read and drop what is still in flight, drop what was not yet handed out."""
        if not self.active:
            return
        self.active = False
        self._todo.clear()
        try:
            while self._tags:
                self._read_one(keep=False)
        finally:
            for _, item in self._got.values():
                if item.path is not None:
                    item.path.unlink(missing_ok=True)
            self._got.clear()


class _Null:
    def write(self, _data: Any) -> None: ...


_NULL: Any = _Null()


def plan(items: Sequence[tuple[int, Any, int]], *, max_mails: int = COMMAND_MAX_MAILS,
         max_bytes: int = COMMAND_MAX_BYTES) -> list[list[tuple[int, Any, int]]]:
    """Split ``(uid, ref, size)`` into commands of at most ``max_mails`` / ``max_bytes``."""
    chunks: list[list[tuple[int, Any, int]]] = []
    cur: list[tuple[int, Any, int]] = []
    weight = 0
    for it in items:
        if cur and (len(cur) >= max_mails or weight + it[2] > max_bytes):
            chunks.append(cur)
            cur, weight = [], 0
        cur.append(it)
        weight += it[2]
    if cur:
        chunks.append(cur)
    return chunks


def _discard(body: Any) -> None:
    if isinstance(body, Path):
        body.unlink(missing_ok=True)


def parse_fetch(text: bytes, bodies: list[Any]) -> Fetched | None:
    """The attributes of one ``* n FETCH (...)`` response (``text`` without literals)."""
    m = _UID.search(text)
    if m is None:
        return None
    item = Fetched(uid=int(m.group(1)))
    m = _SIZE.search(text)
    if m is not None:
        item.size = int(m.group(1))
    m = _DATE.search(text)
    if m is not None:
        item.internal_date = internal_date_iso(m.group(1))
    m = _FLAGS.search(text)
    if m is not None:
        item.flags = tuple(f.decode("utf-8", "replace") for f in m.group(1).split())
    for b in bodies:
        if isinstance(b, (bytes, bytearray)):
            item.data = b
        elif isinstance(b, Path):
            item.path = b
    return item


