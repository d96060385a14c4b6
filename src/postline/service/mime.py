"""Build the wire form of an :class:`OutgoingMessage`: the SMTP envelope and the MIME bytes.

Uses the stdlib ``email.message.EmailMessage`` with ``policy.SMTP`` (CRLF, RFC 2047 encoded
words for non-ASCII names and subjects, RFC 2231 file names), or ``policy.SMTPUTF8`` when the
mail carries a non-ASCII local part and the server offers SMTPUTF8. Bcc recipients go into
the envelope only: the header is never written.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.quoprimime
import email.utils
import itertools
import os
import re
import time
import uuid
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from typing import Any, cast

from postline.errors import MessageError
from postline.protocols.base import Envelope
from postline.service.addresses import Address, needs_smtputf8
from postline.service.message import Attachment, OutgoingMessage, priority_headers


class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib registry builds a new header class with ``type()`` on every lookup; caching
    the class per name makes building a mail about a third cheaper (measured)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


_SMTP = email.policy.SMTP.clone(header_factory=_CachedHeaderRegistry())
_SMTPUTF8 = email.policy.SMTPUTF8.clone(header_factory=_CachedHeaderRegistry())


@dataclass(frozen=True)
class Identity:
    """What makes a mail this mail: fixed when it is accepted, kept across retries."""

    message_id: str
    date: str


def new_identity(message: OutgoingMessage, *, now: float | None = None) -> Identity:
    """A fresh, unique ``<random.counter@sender-domain>`` Message-ID and an RFC 5322 Date."""
    domain = message.sender[0].ascii_domain.strip("[]") or "postline.invalid"
    return Identity(message_id=f"<{_ids.prefix}.{next(_ids.counter):x}@{domain}>",
                    date=_date(now))


class _Ids:
    """Message-IDs: 80 random bits per process plus a counter. A uuid4 per mail costs an
    ``os.urandom`` system call, which under load also hands the GIL to another thread; the
    prefix is renewed in forked children so they never repeat their parent's IDs."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = uuid.uuid4().hex[:20]
        self.counter = itertools.count(1)


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.renew)
_date_cache: tuple[int, str] = (-1, "")


def _date(now: float | None) -> str:
    """``email.utils.formatdate(now, localtime=True)``, computed once per second."""
    global _date_cache
    if now is not None:
        return email.utils.formatdate(now, localtime=True)
    second = int(time.time())
    cached = _date_cache
    if cached[0] != second:
        cached = _date_cache = (second, email.utils.formatdate(second, localtime=True))
    return cached[1]


def required_smtputf8(message: OutgoingMessage) -> str | None:
    """The first field whose address needs SMTPUTF8 (non-ASCII local part), or None."""
    for field, group in (("From", message.sender), ("To", message.to), ("Cc", message.cc),
                         ("Bcc", message.bcc), ("ReplyTo", message.reply_to)):
        if needs_smtputf8(group):
            return field
    return None


def check_capabilities(message: OutgoingMessage, *, smtputf8: bool | None) -> None:
    """Raise MessageError when ``message`` needs SMTPUTF8 and the server does not offer it.

    ``smtputf8`` None means "not known yet" (the check is repeated at delivery).
    """
    field = required_smtputf8(message)
    if field and smtputf8 is False:
        raise MessageError(f"{field} has an address with a non-ASCII local part, but the server "
                           f"does not offer SMTPUTF8; use an ASCII address", field=field)


def check_size(raw: bytes, *, max_size: int | None, message: OutgoingMessage) -> None:
    """Raise MessageError when ``raw`` is larger than the server's SIZE limit."""
    if max_size and len(raw) > max_size:
        field = "Attachments" if message.attachments else "Body"
        raise MessageError(f"the mail is {len(raw):,} octets, over the server's SIZE limit of "
                           f"{max_size:,}; make {field} smaller", field=field)


def build(message: OutgoingMessage, identity: Identity, *, smtputf8: bool
          ) -> tuple[Envelope, bytes]:
    """Return (envelope, RFC 5322 bytes with CRLF line ends).

    ``smtputf8`` says whether the server offers SMTPUTF8; it is used only when the mail
    needs it. Raises MessageError when the mail needs SMTPUTF8 and the server lacks it, or
    when the stdlib cannot build it (``field`` "message"; nothing was sent).
    """
    check_capabilities(message, smtputf8=smtputf8)
    utf8 = smtputf8 and required_smtputf8(message) is not None
    envelope = Envelope(sender=message.sender[0].wire(smtputf8=utf8),
                        recipients=tuple(a.wire(smtputf8=utf8) for a in message.recipients),
                        smtputf8=utf8)
    fast = None if utf8 else fast_plain(message, identity)
    if fast is not None:
        return envelope, fast
    try:
        return envelope, _build_mime(message, identity, utf8)
    except Exception as exc:
        # Validation refuses what is known to break the stdlib's builder; anything else it
        # raises (HeaderParseError, ValueError, ...) is still a mail that cannot be built.
        # Nothing was sent, so this is a failure of the message, never an unknown outcome.
        raise MessageError(f"the mail cannot be built as MIME ({type(exc).__name__}: {exc}); "
                           f"nothing was sent", field="message") from exc


def _build_mime(message: OutgoingMessage, identity: Identity, utf8: bool) -> bytes:
    msg = EmailMessage(policy=_SMTPUTF8 if utf8 else _SMTP)
    msg["Date"] = identity.date
    msg["Message-ID"] = identity.message_id
    msg["From"] = [_header_address(a, utf8) for a in message.sender]
    if len(message.sender) > 1:
        msg["Sender"] = _header_address(message.sender[0], utf8)
    if message.to:
        msg["To"] = [_header_address(a, utf8) for a in message.to]
    if message.cc:
        msg["Cc"] = [_header_address(a, utf8) for a in message.cc]
    if message.reply_to:
        msg["Reply-To"] = [_header_address(a, utf8) for a in message.reply_to]
    msg["Subject"] = message.subject
    for name, value in (*priority_headers(message.priority), *message.headers):
        msg[name] = value
    _set_body(msg, message)
    return msg.as_bytes()


# The fast path below writes exactly the bytes the stdlib writes for the commonest mail of a
# pipeline (plain ASCII text, simple names, short header lines), about ten times faster: the
# stdlib parses every header value it is given and folds it again, which made MIME building
# cost more than the SMTP exchange itself. Anything else takes the stdlib path; the unit tests
# check byte equality on both paths.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_NAME = re.compile(rf"^{_ATOM}(?: {_ATOM})*$")
_SIMPLE_TEXT = re.compile(r"^[!-~]+(?: [!-~]+)*$")
_PARSED_HEADERS = set(HeaderRegistry().registry) | {"mime-version"}
_MAX_LINE = 78


def fast_plain(message: OutgoingMessage, identity: Identity) -> bytes | None:
    """The wire bytes of a simple plain-text ``message``, or None when the stdlib must build it."""
    if message.html or message.attachments:
        return None
    body = _text_body(message.text or "\n")
    if body is None:
        return None
    headers = [("Date", identity.date), ("Message-ID", identity.message_id)]
    for name, group in (("From", message.sender), ("Sender", message.sender[:1]),
                        ("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if not group or (name == "Sender" and len(message.sender) < 2):
            continue
        rendered = []
        for a in group:
            if a.name and not _SIMPLE_NAME.match(a.name) or not a.domain.isascii() \
                    or not a.local.isascii():
                return None
            rendered.append(f"{a.name} <{a.addr}>" if a.name else a.addr)
        headers.append((name, ", ".join(rendered)))
    if message.subject and (not _SIMPLE_TEXT.match(message.subject) or "=?" in message.subject):
        return None
    headers.append(("Subject", message.subject))
    for name, value in (*priority_headers(message.priority), *message.headers):
        if name.lower() in _PARSED_HEADERS or not _SIMPLE_TEXT.match(value) or "=?" in value:
            return None
        headers.append((name, value))
    out = []
    for name, value in headers:
        line = f"{name}: {value}" if value else f"{name}:"
        if len(line) > _MAX_LINE:
            return None
        out.append(line)
    cte, payload = body
    out += ['Content-Type: text/plain; charset="utf-8"', f"Content-Transfer-Encoding: {cte}",
            "MIME-Version: 1.0", ""]
    head = "\r\n".join(out).encode("ascii")
    return head + b"\r\n" + payload


def _text_body(text: str) -> tuple[str, bytes] | None:
    """(transfer encoding, CRLF body) chosen as ``email.contentmanager`` chooses for
    ``set_content(text)`` under policy.SMTP, when that is 7bit or quoted-printable; None for
    8bit and base64 (left to the stdlib)."""
    raw = text.encode("utf-8")
    if not raw:
        return None
    # bytes.splitlines() (what the stdlib uses) ends lines at \r\n, \r and \n only
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not raw.endswith(b"\n"):
        raw += b"\n"
    if _LONG_LINE.search(raw) is None:
        if raw.isascii():
            return "7bit", raw.replace(b"\n", b"\r\n")
        return None                                    # 8bit
    if not raw.translate(None, _QP_SAFE):
        # Only characters quoted-printable leaves as they are, so the stdlib's choice is QP
        # (never longer than base64 then) and its encoding is just the soft line breaks.
        lines = raw[:-1].split(b"\n")
        body = _qp_soft_breaks(lines)
        if body is not None:
            return "quoted-printable", body
        return _text_body_qp(lines)
    return _text_body_qp(raw[:-1].split(b"\n"))


def _qp_soft_breaks(lines: list[bytes]) -> bytes | None:
    """Lines that need no quoting, cut where ``quoprimime.body_encode(maxlinelen=78)`` cuts
    them (77 characters + "=" while at least 79 are left); None when a line ends in white
    space, which QP must quote (left to the stdlib)."""
    out = []
    for line in lines:
        if line.endswith(_WHITE):
            return None
        n = len(line)
        if n <= _MAX_LINE:
            out.append(line)
            continue
        start = 0
        while n - start > _MAX_LINE:
            out.append(line[start:start + _MAX_LINE - 1] + b"=")
            start += _MAX_LINE - 1
        out.append(line[start:])
    out.append(b"")
    return b"\r\n".join(out)


# the bytes quoprimime.body_encode keeps as they are, plus the line end
_QP_SAFE = bytes(c for c in range(32, 127) if c != ord("=")) + b"\t\n"
_WHITE = (b" ", b"\t")
_LONG_LINE = re.compile(rb"[^\n]{%d}" % (_MAX_LINE + 1))


def _text_body_qp(lines: list[bytes]) -> tuple[str, bytes] | None:
    """The general quoted-printable-or-base64 choice of the stdlib, for ``lines``."""
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    sniff_qp = email.quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        return None                                    # base64
    data = sniff_qp if len(lines) <= 10 else email.quoprimime.body_encode(
        (b"\n".join(lines) + b"\n").decode("latin-1"), _MAX_LINE)
    return "quoted-printable", "".join(
        line + "\r\n" for line in data.splitlines()).encode("ascii")


def _header_address(a: Address, utf8: bool) -> HeaderAddress:
    domain = a.domain if utf8 else a.ascii_domain
    return HeaderAddress(display_name=a.name, username=a.local, domain=domain)


def _set_body(msg: EmailMessage, message: OutgoingMessage) -> None:
    msg.set_content(message.text or ("" if message.html else "\n"))
    if message.html:
        msg.add_alternative(message.html, subtype="html")
    for att in message.attachments:
        _attach(msg, att)
    if msg.is_multipart():
        # add_alternative/add_attachment leave a MIME-Version header in every subpart
        for part in msg.walk():
            if part is not msg:
                del part["MIME-Version"]


def _attach(msg: EmailMessage, att: Attachment) -> None:
    maintype, subtype = att.content_type.split("/", 1)
    if maintype == "text":
        # text attachments are passed as bytes too, so their charset is not guessed wrong
        msg.add_attachment(att.data, maintype="application", subtype="octet-stream",
                           filename=att.filename)
        part = cast(list[EmailMessage], msg.get_payload())[-1]  # multipart: a list of parts
        part.replace_header("Content-Type", att.content_type)
        part.set_param("name", att.filename)
        return
    msg.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=att.filename)


def message_to_json(message: OutgoingMessage) -> dict[str, Any]:
    """A JSON-able dict that :func:`message_from_json` turns back into the same message."""
    return {
        "From": [a.to_json() for a in message.sender],
        "To": [a.to_json() for a in message.to], "Cc": [a.to_json() for a in message.cc],
        "Bcc": [a.to_json() for a in message.bcc],
        "ReplyTo": [a.to_json() for a in message.reply_to],
        "Subject": message.subject, "Text": message.text, "Html": message.html,
        "Attachments": [{"FileName": a.filename, "ContentType": a.content_type,
                         "Content": base64.b64encode(a.data).decode()}
                        for a in message.attachments],
        "Headers": [list(h) for h in message.headers], "Priority": message.priority,
    }


def message_from_json(data: dict[str, Any]) -> OutgoingMessage:
    """Inverse of :func:`message_to_json` (for mails read back from the outbox)."""
    def addrs(key: str) -> tuple[Address, ...]:
        out = []
        for item in data.get(key, []):
            local, domain = item["Address"].rsplit("@", 1)
            out.append(Address(local=local, domain=domain, name=item.get("PersonalName", "")))
        return tuple(out)

    return OutgoingMessage(
        sender=addrs("From"), to=addrs("To"), cc=addrs("Cc"), bcc=addrs("Bcc"),
        reply_to=addrs("ReplyTo"), subject=data.get("Subject", ""), text=data.get("Text", ""),
        html=data.get("Html", ""),
        attachments=tuple(Attachment(filename=a["FileName"], content_type=a["ContentType"],
                                     data=base64.b64decode(a["Content"]))
                          for a in data.get("Attachments", [])),
        headers=tuple((h[0], h[1]) for h in data.get("Headers", [])),
        priority=data.get("Priority", "normal"))
