"""The fast path: a streaming MIME splitter over bytes (or an mmap of a spooled mail).

Why hand-written (measured on the bench mailbox of 5,000 mails, 210 MB): the stdlib
``email`` parser takes ~11 s (``policy.default``) / ~9 s (``compat32``), far above the
0.5-1 s raw-fetch floor. fast-mail-parser (Rust) is fast but takes the whole mail as one
string and returns attachments as in-memory bytes, so a 100 MB attachment would sit in
memory two or three times; it also gives no control over charsets and defects. Measured
again on CRLF mails as IMAP sends them, with the per-part work the record needs (charsets,
parameters, SHA-256): 0.53 s with it vs 0.52 s here, so it is not used (docs/source.md). This
splitter finds boundaries with ``bytes.find`` (memchr speed), decodes only the small header
blocks with the stdlib header helpers, and decodes base64/quoted-printable with ``binascii``
in 1 MB chunks straight into attachment files, hashing as it goes. A mail it cannot handle
raises :class:`FastPathError` and is re-read by the lenient stdlib parser (see parse.py).
"""

from __future__ import annotations

import binascii
import mmap
import re
from collections.abc import Iterator

from postline.source.attachments import Attachment, AttachmentPolicy, Scratch, add_attachment
from postline.source.headers import (
    body_text,
    content_info,
    decode_words,
    raw_header_text,
)
from postline.source.limits import MAX_DEPTH, MAX_HEADERS, MAX_MALFORMED, MAX_PARTS, HeaderCap

Buffer = bytes | bytearray | mmap.mmap

try:  # SIMD base64 (2-3x binascii's speed on attachments); optional
    from pybase64 import b64decode as _pybase64_decode

    def _b64decode(data: memoryview) -> bytes:
        return _pybase64_decode(data, validate=False)
except ImportError:  # pragma: no cover - depends on the installation
    def _b64decode(data: memoryview) -> bytes:
        return binascii.a2b_base64(data)
CHUNK = 1 << 20
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NON_B64 = bytes(b for b in range(256) if b not in _B64)
_TAIL_OK = (b"", b"\r", b"\n", b" ", b"\t", b"-")


class FastPathError(Exception):
    """The fast parser gives up on this mail; the caller falls back to the stdlib parser."""


class TooDeep(FastPathError):
    """Multipart nesting past MAX_DEPTH: the stdlib parser reads deeper, and failing that,
    ``parse_fast(cut_deep=True)`` reads the mail without its deepest parts."""


class ParsedMail:
    """Everything the record needs from the MIME structure (headers still raw text)."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []   # (name, raw unfolded value), in order
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[Attachment] = []
        self.defects: list[str] = []
        self.stored_total = 0
        self.stored_count = 0
        self.parts = 0                            # MIME parts read so far (MAX_PARTS)
        self.cut_deep = False                     # parts past the depth limit: left out
        self.parser = "fast"
        self.scratch: Scratch | None = None       # set by parse_mail: stored part files
        self._by_name: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]]:
        # built on first use, after the parser has set ``headers``
        if self._by_name is None:
            by_name: dict[str, list[str]] = {}
            for n, v in self.headers:
                by_name.setdefault(n.lower(), []).append(v)
            self._by_name = by_name
        return self._by_name

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        values = self._index().get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order."""
        return self._index().get(name.lower(), [])


def read_headers(buf: Buffer, start: int, end: int, defects: list[str]
                 ) -> tuple[list[tuple[str, str]], int]:
    """Parse the header block at ``start``; returns ``([(name, value)], body_start)``."""
    if buf[start:start + 1] == b"\n":
        return [], start + 1
    if buf[start:start + 2] == b"\r\n":
        return [], start + 2
    # Search the line ending of the first line first, the other one only before it: a CRLF
    # mail has no "\n\n" (an LF mail no "\n\r\n"), and searching for one would scan the
    # whole (maybe 100 MB) body. Either way the earlier of the two ends the block.
    nl = buf.find(b"\n", start, end)
    if nl > start and buf[nl - 1] == 13:
        i = buf.find(b"\n\r\n", start, end)
        j = buf.find(b"\n\n", start, i if i >= 0 else end)
    else:
        j = buf.find(b"\n\n", start, end)
        i = buf.find(b"\n\r\n", start, j if j >= 0 else end)
    if i >= 0 and (j < 0 or i < j):
        hdr_end, body = i + 1, i + 3
    elif j >= 0:
        hdr_end, body = j + 1, j + 2
    else:
        hdr_end = body = end
    block = bytes(buf[start:hdr_end])
    lines = block.count(b"\n")   # (a C scan of a few hundred bytes, as a rule)
    if lines > MAX_HEADERS and (lines - block.count(b"\n ") - block.count(b"\n\t")
                                > MAX_HEADERS):
        fast = None   # more headers than are kept: read them one by one, bounded
    else:
        fast = _header_lines_ascii(block)
    if fast is not None:
        return fast, body
    # Only blocks the fast reader declined get here (it declines any lone CR), and the
    # two counts are C-level scans of a few hundred bytes.
    original = block
    bare_cr = b"\r" in block and block.count(b"\r") != block.count(b"\r\n")
    if bare_cr:
        block, body = _bare_cr_block(block, start, body, defects)
    headers, cut = _header_lines(block, defects)
    if cut is not None:
        # the block ran into the body without an empty line: the body starts at the first
        # line that is no header, as the stdlib's parser has it
        body = start + (_original_offset(original, block, cut) if bare_cr else cut)
    return headers, body


def _original_offset(original: bytes, block: bytes, cut: int) -> int:
    """Where the line that starts at ``cut`` of ``block`` (the LF-only copy of
    ``original`` made by :func:`_bare_cr_block`) starts in ``original``."""
    lines = block.count(b"\n", 0, cut)
    for n, m in enumerate(re.finditer(rb"\r\n|\r|\n", original), start=1):
        if n == lines:
            return m.end()
    return len(original)


def _bare_cr_block(block: bytes, start: int, body: int, defects: list[str]
                   ) -> tuple[bytes, int]:
    """A header block with lone CRs read as if they were line ends (old Mac software and
    broken gateways write them; the stdlib's parser reads them so too): the block up to
    its first empty line, its line ends made LF, and where the body starts."""
    defects.append("bare CR line end in the header block; read as a line end")
    # An empty line whose ends involve a lone CR: "\r\r" (CR, then CR or CRLF) or "\n\r"
    # (LF, then a lone CR: "\n\r\n" ended the block before it got here).
    ends: list[tuple[int, int]] = []       # (last byte of the headers, first of the body)
    i = block.find(b"\r\r")
    if i >= 0:
        ends.append((i, i + (3 if block[i + 2:i + 3] == b"\n" else 2)))
    i = block.find(b"\n\r")
    if i >= 0:
        ends.append((i, i + 2))
    if ends:
        last, first = min(ends)
        block, body = block[:last + 1], start + first
    return block.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), body


def _header_lines_ascii(block: bytes) -> list[tuple[str, str]] | None:
    """The common case in a few C-level string operations: an ASCII block with no
    malformed line. None means: read it line by line (:func:`_header_lines`), which gives
    the same result for such a block and also handles everything else."""
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text[:1] in (" ", "\t"):
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    if "\n " in text or "\n\t" in text:
        # unfold: a continuation line is appended to its header as it is (RFC 5322 2.2.3)
        text = text.replace("\n ", " ").replace("\n\t", "\t")
    out = []
    for line in text.split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        name = name.rstrip()
        if not sep or not name or " " in name or "\t" in name:
            return None
        out.append((name, value.strip()))
    return out


def _lines(block: bytes) -> Iterator[tuple[int, bytes]]:
    """The lines of ``block`` one at a time, each with its offset (a split() of a 14 MB
    block of a million headers would hold a million line objects at once)."""
    pos, end = 0, len(block)
    while pos < end:
        nl = block.find(b"\n", pos)
        if nl < 0:
            nl = end
        yield pos, block[pos:nl]
        pos = nl + 1


def _header_lines(block: bytes, defects: list[str]
                  ) -> tuple[list[tuple[str, str]], int | None]:
    """The headers of ``block`` line by line, and the offset of the first line that is no
    header (no colon, or white space in the name) when there is one: the body starts
    there, and the lines after it are not headers. Problems go to ``defects``."""
    # a value's lines are joined at the end: adding each continuation line to the value
    # copied it every time (a Cc of 300,000 folded lines: minutes)
    headers: list[tuple[bytes, list[bytes]]] = []
    first = True
    cut: int | None = None
    cap = HeaderCap()
    malformed = 0
    dropping = False          # the current header was not kept: nor are its continuations
    for at, line in _lines(block):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if dropping:
                continue
            if headers:
                headers[-1][1].append(line)
            else:
                defects.append("continuation line before the first header")
            first = False
            continue
        name, sep, value = line.partition(b":")
        name = name.rstrip()
        if line.startswith(b"From ") or (sep and not name):
            # an mbox envelope line (a header, not the body) or a line starting with ':'
            if not (first and line.startswith(b"From ")):
                malformed += 1
                if malformed <= MAX_MALFORMED:
                    defects.append(f"malformed header line {line[:40]!r}")
            first = False
            continue
        if not sep or b" " in name or b"\t" in name:
            defects.append("no empty line between the headers and the body; the body "
                           f"starts at {line[:40]!r}")
            cut = at
            break
        first = False
        dropping = not cap.keep(name, headers)
        if not dropping:
            headers.append((name, [value]))
    if malformed > MAX_MALFORMED:
        defects.append(f"{malformed:,} malformed header lines; the first {MAX_MALFORMED} "
                       "named")
    if (capped := cap.defect(len(headers))) is not None:
        defects.append(capped)
    out = []
    for name, lines in headers:
        n = name.decode("ascii", errors="replace")
        value = lines[0] if len(lines) == 1 else b"".join(lines)
        out.append((n, raw_header_text(value, defects, n).strip()))
    return out, cut


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _find_delim(buf: Buffer, delim: bytes, pos: int, end: int) -> int:
    """``buf.find(delim, pos, end)``, found through its first "-" (a ``memchr``): base64
    has no "-", so the boundary after a 1 MB attachment is found at memory speed (~10
    GB/s here) instead of the substring search's ~2 GB/s. After a few "-" that start no
    delimiter (a text full of dashes), the substring search takes over."""
    n = len(delim)
    for _ in range(16):
        i = buf.find(b"-", pos, end)
        if i < 0:
            return -1
        if buf[i:i + n] == delim:
            return i if i + n <= end else -1   # (one running past ``end`` is not found)
        pos = i + 1
    return buf.find(delim, pos, end)


def split_multipart(buf: Buffer, start: int, end: int, boundary: str, defects: list[str],
                    limit: int = MAX_PARTS) -> list[tuple[int, int]] | None:
    """Spans of the body parts between ``--boundary`` lines (at most ``limit``, the rest
    is not looked for); None when none is found."""
    delim = b"--" + boundary.encode("latin-1", errors="replace")
    dl = len(delim)
    marks: list[int] = []
    closed = False
    pos = start
    while True:
        i = _find_delim(buf, delim, pos, end)
        if i < 0:
            break
        pos = i + dl
        if (i == start or buf[i - 1] == 10) and buf[pos:pos + 1] in _TAIL_OK:
            if buf[pos:pos + 2] == b"--":
                marks.append(i)
                closed = True
                break
            if buf[pos:pos + 1] == b"-":
                continue
            marks.append(i)
            if len(marks) > limit:
                closed = True   # (not read further: _walk names the cut)
                break
    if not marks:
        return None
    if not closed:
        defects.append(f"multipart without closing boundary {boundary[:40]!r}")
        marks.append(end)
    spans = []
    for a, b in zip(marks, marks[1:], strict=False):
        nl = buf.find(b"\n", a, b)
        s = nl + 1 if nl >= 0 else b
        e = b
        if b < end or closed:
            if e > s and buf[e - 1] == 10:
                e -= 1
                if e > s and buf[e - 1] == 13:
                    e -= 1
        spans.append((s, max(s, e)))
    return spans


def decode_chunks(buf: Buffer, start: int, end: int, cte: str, defects: list[str]
                  ) -> Iterator[bytes]:
    """Decode the transfer encoding of ``buf[start:end]`` in chunks of about 1 MB (a mail
    held in memory: base64 in one piece)."""
    if cte == "base64" and not isinstance(buf, mmap.mmap):
        # One call over the whole part (no per-line work, no copy of the input): the
        # decoders skip line breaks themselves. Bad padding or stray characters: the
        # careful chunked path below, which records what was wrong.
        try:
            yield _b64decode(memoryview(buf)[start:end])
            return
        except (binascii.Error, ValueError):
            pass
    if cte == "base64":
        carry = b""
        pos = start
        while pos < end:
            stop = min(pos + CHUNK, end)
            data = carry + bytes(buf[pos:stop]).translate(None, _NON_B64)
            _release(buf, pos, stop)
            pos = stop
            n = len(data) - len(data) % 4
            carry = data[n:]
            if n:
                try:
                    yield binascii.a2b_base64(data[:n])
                except binascii.Error as exc:
                    raise FastPathError(f"base64: {exc}") from exc
        carry = carry.rstrip(b"=")
        if carry:
            if len(carry) == 1:
                defects.append("base64 body has a dangling character; dropped")
            else:
                defects.append("base64 body is missing its padding")
                yield binascii.a2b_base64(carry + b"=" * (-len(carry) % 4))
    elif cte == "quoted-printable":
        pos = start
        while pos < end:
            stop = min(pos + CHUNK, end)
            if stop < end:
                nl = buf.rfind(b"\n", pos, stop)
                if nl > pos:
                    stop = nl + 1
            chunk = bytes(buf[pos:stop])
            _release(buf, pos, stop)
            pos = stop
            yield binascii.a2b_qp(chunk)
    else:
        if cte not in ("7bit", "8bit", "binary", ""):
            defects.append(f"unknown Content-Transfer-Encoding {cte[:30]!r}; kept as is")
        pos = start
        while pos < end:
            stop = min(pos + CHUNK, end)
            yield bytes(buf[pos:stop])
            _release(buf, pos, stop)
            pos = stop


def _release(buf: Buffer, start: int, stop: int) -> None:
    # Drop pages of a spooled mail once decoded, so a 100 MB attachment is never resident
    # as a whole (the file stays in the page cache; a later read maps it back in).
    if isinstance(buf, mmap.mmap) and stop - start >= CHUNK // 2:
        page = mmap.PAGESIZE
        a = (start // page) * page
        try:
            buf.madvise(mmap.MADV_DONTNEED, a, stop - a)
        except (OSError, ValueError, AttributeError):
            pass


def parse_fast(buf: Buffer, *, policy: AttachmentPolicy, scratch: Scratch,
               cut_deep: bool = False) -> ParsedMail:
    """Parse a whole mail. Raises FastPathError (or any error) to ask for the fallback;
    ``cut_deep``: leave out parts nested past MAX_DEPTH (with a defect) instead."""
    mail = ParsedMail()
    mail.scratch = scratch
    mail.cut_deep = cut_deep
    if buf.find(b"\n") < 0 and buf.find(b"\r") >= 0:
        # Only CR line ends (classic Mac OS): read as CRLF, so that the header block, the
        # boundaries and the body are found. A copy, but of a rare mail (the stdlib
        # parser, the alternative, would hold it in memory too). A normal mail finds its
        # first LF in the first line.
        buf = bytes(buf).replace(b"\r", b"\r\n")
        mail.defects.append("mail has only CR line ends; read as CRLF")
    mail.headers, body = read_headers(buf, 0, len(buf), mail.defects)
    if not mail.headers:
        raise FastPathError("no header block")
    _walk(buf, mail, mail.headers, body, len(buf), 0, "text/plain", policy, scratch)
    return mail


def beyond_limits(mail: ParsedMail, depth: int, max_depth: int = MAX_DEPTH) -> bool:
    """True when a part at ``depth`` is not to be read (past ``max_depth`` or MAX_PARTS);
    the first such part of each kind leaves a defect. Counts the part otherwise. Raises
    FastPathError past ``max_depth`` unless ``mail.cut_deep``: the stdlib parser reads
    deeper (a few hundred levels), and is asked first."""
    if depth > max_depth:
        if not mail.cut_deep:
            raise TooDeep("MIME nesting too deep")
        note = f"MIME parts nested deeper than {max_depth} levels are not read"
        if note not in mail.defects:
            mail.defects.append(note)
        return True
    mail.parts += 1
    if mail.parts > MAX_PARTS:
        if mail.parts == MAX_PARTS + 1:
            mail.defects.append(f"more than {MAX_PARTS:,} MIME parts; the rest is not read")
        return True
    return False


def _walk(buf: Buffer, mail: ParsedMail, headers: list[tuple[str, str]], start: int, end: int,
          depth: int, default_type: str, policy: AttachmentPolicy, scratch: Scratch) -> None:
    if beyond_limits(mail, depth):
        return
    d = mail.defects
    info = content_info(_get(headers, "content-type"), _get(headers, "content-disposition"),
                       d, default_type)
    if info.type.startswith("multipart/"):
        spans = None
        if info.boundary:
            spans = split_multipart(buf, start, end, info.boundary, d)
            if spans is None:
                d.append(f"{info.type} boundary {info.boundary[:40]!r} not found; "
                         "body read as text")
        else:
            d.append(f"{info.type} without boundary; body read as text")
        if spans is not None:
            child = "message/rfc822" if info.type == "multipart/digest" else "text/plain"
            for s, e in spans:
                if mail.parts >= MAX_PARTS:   # (beyond_limits names it, once)
                    beyond_limits(mail, depth + 1)
                    break
                hdrs, body = read_headers(buf, s, e, d)
                _walk(buf, mail, hdrs, body, e, depth + 1, child, policy, scratch)
            return
        info.type = "text/plain"
    cte = (_get(headers, "content-transfer-encoding") or "7bit").strip().lower()
    if (info.type in ("text/plain", "text/html") and info.disposition != "attachment"
            and not info.filename):
        data = b"".join(decode_chunks(buf, start, end, cte, d))
        text = body_text(data, info.charset, d, info.type)
        (mail.texts if info.type == "text/plain" else mail.htmls).append(text)
        return
    filename = info.filename
    if filename is None and info.type in ("message/rfc822", "message/global"):
        inner, _ = read_headers(buf, start, min(end, start + 65536), [])
        subject = _get(inner, "subject")
        filename = (decode_words(subject) if subject else "message") + ".eml"
    add_attachment(mail, chunks=decode_chunks(buf, start, end, cte, d), filename=filename,
                   content_type=info.type, disposition=info.disposition,
                   content_id=_get(headers, "content-id"), policy=policy, scratch=scratch)
