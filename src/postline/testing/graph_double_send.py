"""Sending endpoints of the Graph test double: MIME ``sendMail``, MIME drafts, attachments,
upload sessions and ``send``. Mail leaves through the stack's Postfix, so it lands in
Dovecot; a copy goes to Sent Items.

As documented (and where the documents are silent, the strictest reading):

* ``POST /sendMail`` with ``Content-Type: text/plain`` takes base64 MIME and sends to the
  addresses of its To, Cc and Bcc headers
  (https://learn.microsoft.com/en-us/graph/outlook-send-mime-message). Nothing there says a
  ``Bcc:`` header is removed, so the double delivers the MIME *as is*, Bcc header included:
  a test sees a leak a real tenant might show. Bodies over 4 MB answer 413
  (https://learn.microsoft.com/en-us/graph/api/user-sendmail);
* ``POST /messages`` with the same body creates a draft (kept in memory, not in the Drafts
  folder); ``PATCH`` sets ``bccRecipients`` (properties, never headers); ``POST
  .../attachments`` adds a file attachment of a request under 4 MB;
  ``.../attachments/createUploadSession`` answers an ``uploadUrl`` on *another host name*
  (``localhost`` instead of ``127.0.0.1``) that takes ``PUT`` byte ranges of at most 4 MB
  in order, without an Authorization header, files up to 150 MB
  (https://learn.microsoft.com/en-us/graph/api/attachment-createuploadsession,
  https://learn.microsoft.com/en-us/graph/outlook-large-attachments);
* ``POST /messages/{id}/send`` sends the draft with its attachments and answers 202
  (https://learn.microsoft.com/en-us/graph/api/message-send).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import smtplib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from postline.testing.graph_double_store import GraphFault, not_found

if TYPE_CHECKING:
    from postline.testing.graph_double import GraphDouble

REQUEST_LIMIT = 4 * 1024 * 1024
CHUNK_LIMIT = 4 * 1024 * 1024
UPLOAD_MAX = 150 * 1024 * 1024


@dataclass
class Draft:
    user: str
    mime: bytes
    bcc: list[str] = field(default_factory=list)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, type, data


@dataclass
class Upload:
    draft: str
    name: str
    content_type: str
    size: int
    data: bytearray = field(default_factory=bytearray)


class Outbox:
    """Drafts and upload sessions of one double (shared by its request threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.drafts: dict[str, Draft] = {}
        self.uploads: dict[str, tuple[str, Upload]] = {}   # session -> (authtoken, upload)


def _decode_mime(body: bytes) -> bytes:
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise GraphFault(400, "ErrorMimeContentInvalidBase64String",
                         "Invalid base64 string for MIME content.") from None


def header_rcpts(raw: bytes) -> list[str]:
    msg = BytesHeaderParser().parsebytes(raw)
    values = [str(v) for h in ("to", "cc", "bcc") for v in msg.get_all(h, [])]
    return [a for _, a in getaddresses(values) if a]


class SendRoutes:
    """The sending endpoints; mixed into ``graph_double_routes.Call``."""

    d: GraphDouble
    body: bytes
    headers: dict[str, str]
    user: str

    def need(self, scope: str) -> None: ...  # noqa: E704 - provided by Call
    def json_body(self) -> dict[str, Any]: ...  # noqa: E704
    def ok(self, data: Any, status: int = 200) -> Any: ...  # noqa: E704

    def _relay(self, raw: bytes, rcpts: list[str], sent_copy: bytes) -> None:
        if not rcpts or any("@" not in a for a in rcpts):
            raise GraphFault(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        with smtplib.SMTP(self.d.stack.host, self.d.stack.ports["smtp"], timeout=30) as smtp:
            smtp.sendmail(self.user, rcpts, raw)
        with self.d.store.imap(self.user) as c:
            c.append("Sent", sent_copy, flags=[b"\\Seen"])

    def _mime_body(self) -> bytes:
        if len(self.body) > REQUEST_LIMIT:
            raise GraphFault(413, "RequestBodyTooLarge",
                             "The maximum request length supported is 4MB.")
        if not self.headers.get("content-type", "").startswith("text/plain"):
            raise GraphFault(400, "ErrorInvalidRequest", "The test double implements only "
                             "the MIME form here (Content-Type: text/plain).")
        return _decode_mime(self.body)

    def send_mail(self) -> Any:
        self.need("Mail.Send")
        raw = self._mime_body()
        self._relay(raw, header_rcpts(raw), raw)   # the Bcc header travels as it is
        return 202, {}, b""

    # -- drafts -------------------------------------------------------------------------

    def _draft(self, mid: str) -> Draft:
        with self.d.outbox.lock:
            draft = self.d.outbox.drafts.get(mid)
        if draft is None or draft.user.lower() != self.user.lower():
            raise not_found()
        return draft

    def create_draft(self) -> Any:
        self.need("Mail.ReadWrite")
        raw = self._mime_body()
        mid = "AAMkDRAFT" + secrets.token_urlsafe(12)
        with self.d.outbox.lock:
            self.d.outbox.drafts[mid] = Draft(user=self.user, mime=raw)
        head = BytesHeaderParser().parsebytes(raw)
        return self.ok({"id": mid, "isDraft": True, "subject": str(head.get("Subject", ""))},
                       201)

    def patch_draft(self, mid: str) -> Any:
        self.need("Mail.ReadWrite")
        draft = self._draft(mid)
        body = self.json_body()
        if "bccRecipients" in body:
            try:
                draft.bcc = [str(r["emailAddress"]["address"]) for r in body["bccRecipients"]]
            except (KeyError, TypeError):
                raise GraphFault(400, "ErrorInvalidRecipients",
                                 "At least one recipient is not valid.") from None
        return self.ok({"id": mid, "isDraft": True, "bccRecipients": body.get(
            "bccRecipients", [])})

    def delete_draft(self, mid: str) -> Any:
        self.need("Mail.ReadWrite")
        self._draft(mid)
        with self.d.outbox.lock:
            self.d.outbox.drafts.pop(mid, None)
        return 204, {}, b""

    def add_attachment(self, mid: str) -> Any:
        self.need("Mail.ReadWrite")
        if len(self.body) > REQUEST_LIMIT:
            raise GraphFault(413, "RequestBodyTooLarge",
                             "The maximum request length supported is 4MB.")
        draft = self._draft(mid)
        body = self.json_body()
        try:
            data = base64.b64decode(str(body["contentBytes"]), validate=True)
        except (KeyError, binascii.Error, ValueError):
            raise GraphFault(400, "ErrorInvalidRequest", "contentBytes is missing or invalid.") \
                from None
        draft.files.append((str(body.get("name", "attachment")),
                            str(body.get("contentType") or "application/octet-stream"), data))
        return self.ok({"id": secrets.token_urlsafe(9), "name": body.get("name")}, 201)

    def create_upload_session(self, mid: str) -> Any:
        self.need("Mail.ReadWrite")
        self._draft(mid)
        item = self.json_body().get("AttachmentItem") or {}
        size = item.get("size")
        if item.get("attachmentType", "file") != "file" or not isinstance(size, int) \
                or size <= 0 or not item.get("name"):
            raise GraphFault(400, "ErrorInvalidRequest",
                             "AttachmentItem needs attachmentType file, name and size.")
        if size > UPLOAD_MAX:
            raise GraphFault(400, "ErrorAttachmentSizeShouldNotBeMoreThan150MB",
                             "The attachment size exceeds 150 MB.")
        sid, token = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
        with self.d.outbox.lock:
            self.d.outbox.uploads[sid] = (token, Upload(
                draft=mid, name=str(item["name"]), size=size,
                content_type=str(item.get("contentType") or "application/octet-stream")))
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.ok({"uploadUrl": f"https://localhost:{self.d.port}/upload/"
                                     f"AttachmentSessions/{sid}?authtoken={token}",
                        "expirationDateTime": expires, "nextExpectedRanges": ["0-"]}, 201)

    def send_draft(self, mid: str) -> Any:
        self.need("Mail.Send")
        draft = self._draft(mid)
        msg = BytesParser(policy=policy.default).parsebytes(draft.mime)
        assert isinstance(msg, EmailMessage)
        for name, ctype, data in draft.files:
            main, _, sub = ctype.partition("/")
            msg.add_attachment(data, maintype=main or "application",
                               subtype=sub or "octet-stream", filename=name)
        raw = msg.as_bytes(policy=policy.SMTP)
        copy = (b"Bcc: " + ", ".join(draft.bcc).encode() + b"\r\n" + raw) if draft.bcc else raw
        self._relay(raw, header_rcpts(raw) + draft.bcc, copy)
        with self.d.outbox.lock:
            self.d.outbox.drafts.pop(mid, None)
        return 202, {}, b""


def upload_chunk(double: GraphDouble, sid: str, query: dict[str, list[str]],
                 headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One ``PUT`` to an upload URL (not under /v1.0, no bearer token)."""
    import json

    def fault(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(
            {"error": {"code": code, "message": message}}).encode()

    if "authorization" in headers:
        # "Do not specify an Authorization request header": the URL is pre-authenticated
        return fault(401, "InvalidAuthenticationToken",
                     "Send no Authorization header to an upload URL.")
    if not headers.get("host", "").startswith("localhost:"):
        return fault(404, "ErrorInvalidUrl", "Upload URLs are served on their own host.")
    with double.outbox.lock:
        token, up = double.outbox.uploads.get(sid, ("", None))
    if up is None or query.get("authtoken", [""])[0] != token:
        return fault(404, "ErrorItemNotFound", "The upload session was not found.")
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers.get("content-range", ""))
    if not m:
        return fault(400, "ErrorInvalidRequest", "Content-Range is missing or malformed.")
    start, end, total = (int(g) for g in m.groups())
    if len(body) > CHUNK_LIMIT:
        return fault(413, "RequestBodyTooLarge", "Upload at most 4 MB per request.")
    if total != up.size or start != len(up.data) or end - start + 1 != len(body):
        return fault(416, "ErrorInvalidRange",
                     f"The range does not match; next expected {len(up.data)}-.")
    up.data += body
    if len(up.data) < up.size:
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"nextExpectedRanges": [f"{len(up.data)}-"]}).encode()
    with double.outbox.lock:
        double.outbox.uploads.pop(sid, None)
        draft = double.outbox.drafts.get(up.draft)
    if draft is None:
        return fault(404, "ErrorItemNotFound", "The draft was deleted.")
    draft.files.append((up.name, up.content_type, bytes(up.data)))
    return 201, {"Location": f"https://localhost:{double.port}/attachments/{sid}"}, b""
