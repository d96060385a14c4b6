"""Turn raw mail bytes into a :class:`ParsedMail`: the fast path, else the stdlib parser.

Never loses a mail: whatever the fast splitter rejects (or crashes on) is parsed again by
the standard library's lenient ``compat32`` parser, with its defects kept. Only when both
fail does :func:`parse_mail` raise :class:`postline.errors.ParseError`, and the runner sends
the mail to the error folder with the reason in the ledger.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import BinaryIO

from postline.errors import ParseError, storage_error
from postline.source.attachments import AttachmentPolicy, Scratch, add_attachment
from postline.source.headers import (
    body_text,
    content_info,
    decode_words,
    raw_header_text,
)
from postline.source.limits import MAX_STDLIB_DEPTH, HeaderCap
from postline.source.mime import (
    Buffer,
    FastPathError,
    ParsedMail,
    TooDeep,
    beyond_limits,
    parse_fast,
)

log = logging.getLogger(__name__)


@contextmanager
def open_buffer(*, data: bytes | None = None, path: Path | None = None) -> Iterator[Buffer]:
    """The mail as a bytes-like buffer: ``data`` itself, or a read-only mmap of ``path``."""
    if data is not None:
        yield data
        return
    assert path is not None
    with open(path, "rb") as fh:
        if path.stat().st_size == 0:
            yield b""
            return
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield mm
        finally:
            mm.close()


def parse_mail(*, data: bytes | bytearray | None = None, path: Path | None = None,
               policy: AttachmentPolicy, work_dir: Path,
               prefix: str | Callable[[], str] = "") -> ParsedMail:
    """Parse one mail given as ``data`` or a spooled ``path``; stored attachments go to
    ``work_dir`` as ``<prefix>NNN.part`` (``parsed.scratch`` lists them).

    Returns the parsed mail (``parser`` says which parser read it). Raises ParseError only
    when neither parser can read the mail at all, StorageError when the disk fails us.
    """
    scratch = Scratch(work_dir, prefix)
    too_deep = False
    try:
        with open_buffer(data=data, path=path) as buf:
            return parse_fast(buf, policy=policy, scratch=scratch)
    except Exception as exc:  # noqa: BLE001 - any failure of the fast path means: fall back
        if (err := storage_error(exc, what="storing attachments")) is not None:
            raise err from exc  # a full disk is not the mail's fault: do not fall back
        kind = "FastPathError" if isinstance(exc, FastPathError) else type(exc).__name__
        reason = f"{kind}: {exc}"[:200]
        too_deep = isinstance(exc, TooDeep)
        log.debug("fast parser gave up (%s); using the stdlib parser", reason)
        scratch.clear()
    try:
        if data is not None:
            import io

            fh: BinaryIO = io.BytesIO(data)
        else:
            assert path is not None
            fh = open(path, "rb")
        with fh:
            mail = parse_stdlib(fh, policy=policy, scratch=scratch)
    except Exception as exc:  # noqa: BLE001
        scratch.clear()
        if (err := storage_error(exc, what="storing attachments")) is not None:
            raise err from exc
        if not too_deep:
            raise ParseError(f"mail cannot be parsed: {type(exc).__name__}: {exc}"[:300]
                             ) from exc
        # (a RecursionError of a mail nested a thousand deep): read it without its deepest
        # parts rather than lose it, subject and all
        return _parse_cut_deep(data, path, policy, scratch, f"{type(exc).__name__}")
    mail.defects.insert(0, f"fast parser gave up ({reason}); parsed with the stdlib parser")
    if (len(data) if data is not None else path.stat().st_size if path else 0) == 0:
        # still a record (the server holds a 0-byte mail), but nobody should wonder why
        # it is blank
        mail.defects.insert(1, "empty mail")
    mail.scratch = scratch
    return mail


def _parse_cut_deep(data: bytes | bytearray | None, path: Path | None,
                    policy: AttachmentPolicy, scratch: Scratch, why: str) -> ParsedMail:
    """The fast parser again, leaving out parts nested past its depth limit. Raises
    StorageError, ParseError."""
    try:
        with open_buffer(data=data, path=path) as buf:
            mail = parse_fast(buf, policy=policy, scratch=scratch, cut_deep=True)
    except Exception as exc:  # noqa: BLE001
        scratch.clear()
        if (err := storage_error(exc, what="storing attachments")) is not None:
            raise err from exc
        raise ParseError(f"mail cannot be parsed: {type(exc).__name__}: {exc}"[:300]) from exc
    mail.defects.insert(0, f"nested too deep for the stdlib parser too ({why}); read "
                           "without its deepest parts")
    return mail


def _raw_headers(part: Message, defects: list[str]) -> list[tuple[str, str]]:
    """``part``'s headers as the fast path reads them: unfolded, stripped, 8-bit bytes
    decoded by :func:`raw_header_text` (UTF-8, else Windows-1252, with a defect).

    ``raw_items`` gives the values as parsed, the 8-bit bytes kept as surrogate escapes;
    ``items``/``get`` of compat32 would turn those into ``Header`` objects whose text has
    U+FFFD in place of every such byte."""
    out: list[tuple[str, str]] = []
    cap = HeaderCap()   # as the fast path keeps them
    for name, value in part.raw_items():
        n = str(name)
        if not cap.keep(n.encode("ascii", "replace"), out):
            continue
        text = str(value)
        try:
            text = raw_header_text(text.encode("ascii", "surrogateescape"), defects, n)
        except UnicodeEncodeError:   # not from the bytes parser: already text
            pass
        out.append((n, text.replace("\r\n", "").replace("\n", "").replace("\r", "").strip()))
    if (cut := cap.defect(len(out))) is not None:
        defects.append(cut)
    return out


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def parse_stdlib(fh: BinaryIO, *, policy: AttachmentPolicy, scratch: Scratch) -> ParsedMail:
    """The lenient fallback: stdlib ``compat32`` parser, defects listed by class name."""
    msg = BytesParser(policy=email_policy.compat32).parse(fh)
    mail = ParsedMail()
    mail.parser = "stdlib"
    mail.scratch = scratch
    mail.headers = _raw_headers(msg, mail.defects)
    _walk_stdlib(msg, mail, policy, scratch, headers=mail.headers)
    return mail


def _walk_stdlib(part: Message, mail: ParsedMail, policy: AttachmentPolicy, scratch: Scratch,
                 headers: list[tuple[str, str]] | None = None, depth: int = 0) -> None:
    if beyond_limits(mail, depth, MAX_STDLIB_DEPTH):
        return
    d = mail.defects
    d.extend(type(x).__name__ for x in getattr(part, "defects", []))
    if headers is None:
        headers = _raw_headers(part, d)
    info = content_info(_first(headers, "content-type"), _first(headers, "content-disposition"),
                        d, part.get_default_type())
    content_id = _first(headers, "content-id")
    # message/* before multipart: compat32 gives a message/rfc822 part a list payload (the
    # inner mail), so is_multipart() is true for it; the fast path keeps it whole, as a
    # .eml attachment, and so must this one.
    if info.type.startswith("message/"):
        inner = part.get_payload()
        inner_msgs = ([m for m in inner if isinstance(m, Message)]
                      if isinstance(inner, list) else [])
        if inner_msgs:
            try:
                data = b"".join(m.as_bytes() for m in inner_msgs)
            except Exception as exc:  # noqa: BLE001 - keep the rest of the mail
                d.append(f"{info.type} part cannot be written back "
                         f"({type(exc).__name__}); stored empty")
                data = b""
        else:
            decoded = part.get_payload(decode=True)
            data = decoded if isinstance(decoded, bytes) else b""
        filename = info.filename
        if filename is None and info.type in ("message/rfc822", "message/global"):
            subject = (_first(_raw_headers(inner_msgs[0], []), "subject")
                       if inner_msgs else None)
            filename = (decode_words(subject) if subject else "message") + ".eml"
        add_attachment(mail, chunks=[data], filename=filename, content_type=info.type,
                       disposition=info.disposition, content_id=content_id,
                       policy=policy, scratch=scratch)
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _walk_stdlib(sub, mail, policy, scratch, depth=depth + 1)
            return
    if info.type.startswith("multipart/"):
        info.type = "text/plain"
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    if (info.type in ("text/plain", "text/html") and info.disposition != "attachment"
            and not info.filename):
        text = body_text(data, info.charset, d, info.type)
        (mail.texts if info.type == "text/plain" else mail.htmls).append(text)
        return
    add_attachment(mail, chunks=[data], filename=info.filename, content_type=info.type,
                   disposition=info.disposition, content_id=content_id,
                   policy=policy, scratch=scratch)
