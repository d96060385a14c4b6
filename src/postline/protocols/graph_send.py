"""Sending through Microsoft Graph: MIME ``sendMail``, or a draft when MIME cannot say it.

* A mail whose every recipient is in its To/Cc headers and whose MIME fits one request
  (3,145,728 bytes: 4 MB of base64, https://learn.microsoft.com/en-us/graph/api/user-sendmail)
  goes as ``POST /sendMail`` with the base64 MIME
  (https://learn.microsoft.com/en-us/graph/outlook-send-mime-message). Graph answers
  ``202 Accepted`` with no body and no per-recipient status, so every recipient is reported
  accepted with code 202; any other 2xx is *unknown* (logged with its body, not retried).
* Otherwise a *draft*: ``POST /messages`` with the MIME (without Bcc header and without the
  largest attachments), ``PATCH`` its ``bccRecipients``, each attachment taken out added by
  ``POST .../attachments`` (under 3 MB) or an upload session
  (https://learn.microsoft.com/en-us/graph/api/attachment-createuploadsession: 3 to 150 MB,
  chunks of at most 4 MB ``PUT`` to an ``uploadUrl`` on another host without the
  Authorization header), then ``POST /messages/{id}/send``. A draft left by a failure is
  deleted.

Graph has no envelope: it sends to whatever the headers name. So a mail whose headers
name a recipient the envelope does not list is refused (it would reach that person), and
Bcc recipients never travel as a ``Bcc:`` header (Microsoft does not say Exchange removes
it). The HTTP work is synchronous (:class:`GraphSession`, shared with the reader) and runs
in a worker thread, so there is one implementation of retries and throttling, not two.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from email.parser import BytesHeaderParser
from typing import Any
from urllib.parse import quote

from postline.errors import AuthError, DeliveryError, DeliveryOutcome, PostlineError
from postline.protocols.base import Envelope, MailSender, RecipientStatus, SendResult
from postline.protocols.graph_http import GraphSession, GraphThrottled, describe, graph_error_of
from postline.protocols.graph_mime import (
    MAX_MIME_BYTES,
    UPLOAD_CHUNK,
    UPLOAD_SESSION_MAX,
    UPLOAD_SESSION_MIN,
    Attachment,
    header_addresses,
    split_attachments,
    without_bcc,
)
from postline.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.graph")

ACCEPTED_NOTE = "accepted by Microsoft Graph (202; Graph reports no per-recipient status)"


def message_id_of(message: bytes) -> str:
    """The Message-ID header of ``message`` ('' when it has none)."""
    return str(BytesHeaderParser().parsebytes(message).get("Message-ID", "")).strip()


def plan(envelope: Envelope, message: bytes) -> tuple[bytes, list[str]]:
    """The MIME to hand to Graph (no Bcc header) and the Bcc recipients (envelope
    recipients its To/Cc headers do not name). Raises DeliveryError when a header names a
    recipient the envelope does not list."""
    wanted = {r.lower() for r in envelope.recipients}
    extra = [a for a in header_addresses(message) if a not in wanted]
    if extra:
        raise DeliveryError(
            f"the mail's To/Cc/Bcc headers name {', '.join(extra[:3])}"
            f"{' ...' if len(extra) > 3 else ''}, which the recipients do not list; Microsoft "
            "Graph has no envelope and would send it to them", code=400, retriable=False,
            hint="list every header recipient as a recipient, or remove them from the headers")
    shown = set(header_addresses(message, ("to", "cc")))
    bcc = [r for r in envelope.recipients if r.lower() not in shown]
    return without_bcc(message), bcc


class GraphSender(MailSender):
    """:class:`MailSender` over Graph; see the module docstring.

    ``send`` raises DeliveryError (``retriable`` for throttling; ``outcome="unknown"`` for
    5xx or an unexpected 2xx; not retriable for other 4xx, with Graph's error code and
    message), AuthError (401 after one token refresh, 403 when the app may not send as this
    mailbox), ConnectError/TLSError (network).
    """

    def __init__(self, *, session: GraphSession, trace: Trace = NULL_TRACE,
                 max_connections: int = 4) -> None:
        self._s = session
        self._trace = trace
        self._limit = asyncio.Semaphore(max(1, max_connections))

    async def connect(self) -> None:
        def fetch_token() -> None:
            with self._trace.step("token") as st:
                self._s.token()
                st.detail = f"access token from {self._s.token_source}"

        await asyncio.to_thread(fetch_token)

    async def close(self) -> None:
        self._s.close()

    @property
    def max_message_size(self) -> int | None:
        return UPLOAD_SESSION_MAX

    @property
    def supports_smtputf8(self) -> bool:
        return False

    async def send(self, envelope: Envelope, message: bytes, *, message_id: str = ""
                   ) -> SendResult:
        if not envelope.recipients:
            raise DeliveryError("a mail without recipients cannot be sent", code=400)
        mime, bcc = plan(envelope, message)
        async with self._limit:
            return await asyncio.to_thread(self._send_sync, envelope, mime, bcc,
                                           message_id or message_id_of(message))

    # -- the two paths ------------------------------------------------------------------

    def _send_sync(self, envelope: Envelope, mime: bytes, bcc: list[str], mid: str
                   ) -> SendResult:
        try:
            if not bcc and len(mime) <= MAX_MIME_BYTES:
                resp = self._s.request("POST", "/sendMail", content=base64.b64encode(mime),
                                       headers={"Content-Type": "text/plain"},
                                       what="sendMail")
                self._check_sent(resp, "sendMail")
            else:
                self._send_draft(mime, bcc)
        except GraphThrottled as exc:
            raise DeliveryError(exc.message, code=429, retriable=True, hint=exc.hint) from exc
        log.info("Graph accepted %s for %d recipient(s)", mid or "a mail",
                 len(envelope.recipients))
        return SendResult(
            message_id=mid, accepted=list(envelope.recipients),
            recipients=[RecipientStatus(address=r, accepted=True, code=202,
                                        message=ACCEPTED_NOTE) for r in envelope.recipients],
            server_reply="202 Accepted (Microsoft Graph)")

    def _send_draft(self, mime: bytes, bcc: list[str]) -> None:
        rest, attachments = split_attachments(mime)
        if len(rest) > MAX_MIME_BYTES:
            raise DeliveryError(
                f"the mail is {len(mime):,} bytes and its text and headers alone are "
                f"{len(rest):,}; Microsoft Graph takes at most {MAX_MIME_BYTES:,} bytes of "
                "MIME in one request", code=413, retriable=False,
                hint="move large content into attachments, or send through SMTP")
        for a in attachments:
            if len(a.data) > UPLOAD_SESSION_MAX:
                raise DeliveryError(
                    f"attachment {a.name!r} is {len(a.data):,} bytes; Microsoft Graph "
                    f"attaches at most {UPLOAD_SESSION_MAX:,} bytes per file", code=413,
                    hint="share large files as links")
        resp = self._s.request("POST", "/messages", content=base64.b64encode(rest),
                               headers={"Content-Type": "text/plain"},
                               what="creating a draft")
        if resp.status_code not in (200, 201):
            raise self._refused(resp, "creating a draft")
        draft = str(resp.json()["id"])
        sent = False
        try:
            if bcc:
                body = {"bccRecipients": [{"emailAddress": {"address": a}} for a in bcc]}
                resp = self._s.request("PATCH", f"/messages/{quote(draft, safe='')}",
                                       json_body=body, what="adding Bcc recipients")
                if resp.status_code != 200:
                    raise self._refused(resp, "adding Bcc recipients")
            for a in attachments:
                self._attach(draft, a)
            resp = self._s.request("POST", f"/messages/{quote(draft, safe='')}/send",
                                   what="sending the draft")
            sent = resp.status_code < 300 or resp.status_code >= 500
            self._check_sent(resp, "sending the draft")
        finally:
            if not sent:
                self._drop_draft(draft)

    def _attach(self, draft: str, a: Attachment) -> None:
        base = f"/messages/{quote(draft, safe='')}/attachments"
        what = f"attaching {a.name!r}"
        if len(a.data) < UPLOAD_SESSION_MIN:
            body: dict[str, Any] = {"@odata.type": "#microsoft.graph.fileAttachment",
                                    "name": a.name, "contentType": a.content_type,
                                    "contentBytes": base64.b64encode(a.data).decode()}
            if a.content_id:
                body.update(contentId=a.content_id, isInline=a.inline)
            resp = self._s.request("POST", base, json_body=body, what=what)
            if resp.status_code not in (200, 201):
                raise self._refused(resp, what)
            return
        item: dict[str, Any] = {"attachmentType": "file", "name": a.name,
                                "size": len(a.data), "contentType": a.content_type}
        if a.content_id:
            item.update(contentId=a.content_id, isInline=a.inline)
        resp = self._s.request("POST", f"{base}/createUploadSession",
                               json_body={"AttachmentItem": item}, what=what)
        if resp.status_code not in (200, 201):
            raise self._refused(resp, what)
        url = str(resp.json()["uploadUrl"])
        total = len(a.data)
        for start in range(0, total, UPLOAD_CHUNK):
            chunk = a.data[start:start + UPLOAD_CHUNK]
            resp = self._s.upload(url, chunk, start=start, total=total, what=what)
            if resp.status_code not in (200, 201):
                raise self._refused(resp, what)

    def _drop_draft(self, draft: str) -> None:
        try:
            self._s.request("DELETE", f"/messages/{quote(draft, safe='')}",
                            what="deleting the unsent draft")
        except PostlineError as exc:  # the real error is already on its way
            log.warning("could not delete the unsent draft %s: %s", draft[-16:], exc)

    # -- answers ------------------------------------------------------------------------

    def _check_sent(self, resp: Any, what: str) -> None:
        if resp.status_code == 202:
            return
        where = f"mailbox {self._s.mailbox or '/me'}"
        if 200 <= resp.status_code < 300:
            # Microsoft documents 202 only: another success status may or may not have sent
            log.warning("Graph answered %s with HTTP %s instead of 202; body: %s", what,
                        resp.status_code, resp.text[:500])
            raise DeliveryError(f"Microsoft Graph answered {what} for {where} with HTTP "
                                f"{resp.status_code} instead of 202: the mail may or may not "
                                "have been sent", code=resp.status_code,
                                outcome=DeliveryOutcome.UNKNOWN,
                                hint="look in the mailbox's Sent Items before sending again")
        if resp.status_code >= 500:
            raise DeliveryError(f"Microsoft Graph failed {what} for {where} "
                                f"({describe(resp)})", code=resp.status_code, retriable=True,
                                outcome=DeliveryOutcome.UNKNOWN,
                                hint="it may have been sent; not repeated")
        raise self._refused(resp, what)

    def _refused(self, resp: Any, what: str) -> PostlineError:
        code, text = graph_error_of(resp.content)
        where = f"mailbox {self._s.mailbox or '/me'}"
        if resp.status_code == 403:
            return AuthError(f"Microsoft Graph refused {what} for {where} ({describe(resp)})",
                             hint="grant the app Mail.Send (and Mail.ReadWrite for drafts; "
                                  "admin consent for application permissions) and check any "
                                  "application access policy")
        if resp.status_code >= 500:
            return DeliveryError(f"Microsoft Graph failed {what} for {where} "
                                 f"({describe(resp)})", code=resp.status_code, retriable=True,
                                 hint="nothing was sent; it will be retried")
        return DeliveryError(f"Microsoft Graph refused the mail: {code or 'HTTP'} "
                             f"{resp.status_code}: {text or resp.reason_phrase} ({what})",
                             code=resp.status_code, retriable=False,
                             hint="fix the message (recipients, headers) and send again")
