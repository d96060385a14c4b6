"""MIME work the Graph sender needs (pure, no I/O): recipients of the headers, removing a
Bcc header, and taking large attachments out of a mail so that the rest fits one request.

Graph has no envelope: a MIME ``sendMail`` goes to the addresses of the To, Cc and Bcc
headers (https://learn.microsoft.com/en-us/graph/outlook-send-mime-message), and nothing in
Microsoft's documentation says Exchange removes a ``Bcc:`` header before delivery. So
postline never sends Bcc recipients as a header: they go into a draft's
``bccRecipients`` instead (see ``graph_send.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses

REQUEST_LIMIT = 4 * 1024 * 1024          # Graph's documented limit of one request body
MAX_MIME_BYTES = REQUEST_LIMIT // 4 * 3  # the most MIME whose base64 fits in it
UPLOAD_SESSION_MIN = 3 * 1024 * 1024     # attachments from 3 MB go through an upload session
UPLOAD_SESSION_MAX = 150 * 1024 * 1024   # ... up to 150 MB each
UPLOAD_CHUNK = 3 * 1024 * 1024           # "up to 4 MB each time": well under it


def header_addresses(message: bytes, names: tuple[str, ...] = ("to", "cc", "bcc")
                     ) -> list[str]:
    """Lower-cased addresses of the named headers of ``message``, in order, once each."""
    headers = BytesHeaderParser().parsebytes(message)
    values = [str(v) for name in names for v in headers.get_all(name, [])]
    return list(dict.fromkeys(addr.lower() for _, addr in getaddresses(values) if addr))


def without_bcc(raw: bytes) -> bytes:
    """``raw`` without its Bcc header field(s), byte for byte otherwise."""
    end = re.search(rb"\r?\n\r?\n", raw)
    head, rest = (raw[: end.start()], raw[end.start():]) if end else (raw, b"")
    lines = re.split(rb"(?<=\n)", head)
    out, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            out.append(line)
    return b"".join(out).rstrip(b"\r\n") + rest if out else rest.lstrip(b"\r\n")


@dataclass(frozen=True)
class Attachment:
    """A file taken out of a mail, to be attached to its draft separately."""

    name: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


def split_attachments(message: bytes, *, limit: int = MAX_MIME_BYTES
                      ) -> tuple[bytes, list[Attachment]]:
    """``message`` without its largest attachments, taken out largest first until the rest
    is at most ``limit`` bytes, and the attachments taken out. Returns ``(message, [])``
    when it fits already or has no attachment to take out."""
    if len(message) <= limit:
        return message, []
    msg = BytesParser(policy=policy.default).parsebytes(message)
    assert isinstance(msg, EmailMessage)
    parts = [p for p in msg.walk() if not p.is_multipart()
             and (p.get_content_disposition() in ("attachment", "inline") and p.get_filename())]
    taken: list[Attachment] = []
    size = len(message)
    for part in sorted(parts, key=lambda p: len(p.as_bytes()), reverse=True):
        if size <= limit:
            break
        data = part.get_payload(decode=True) or b""
        taken.append(Attachment(name=part.get_filename() or "attachment",
                                content_type=part.get_content_type(), data=data,
                                content_id=(part.get("Content-ID") or "").strip("<> ") or None,
                                inline=part.get_content_disposition() == "inline"))
        size -= len(part.as_bytes())
        _remove(msg, part)
    if not taken:
        return message, []
    return msg.as_bytes(policy=policy.SMTP), taken


def _remove(msg: EmailMessage, part: EmailMessage) -> None:
    for container in msg.walk():
        if container.is_multipart():
            payload = container.get_payload()
            assert isinstance(payload, list)
            if any(p is part for p in payload):
                container.set_payload([p for p in payload if p is not part])
                return
