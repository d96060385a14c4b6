"""Sending through Microsoft Graph: ``POST /users/{mailbox}/sendMail`` with the MIME message.

Graph's MIME send takes the whole RFC 5322 message base64-encoded as a ``text/plain`` body
and answers ``202 Accepted`` with no body: there is no per-recipient status, so every
envelope recipient is reported accepted with code 202. Recipients are read from the
message's To/Cc/Bcc headers (Graph has no envelope), so envelope recipients missing from
them are added as a ``Bcc:`` header, which Exchange strips before delivery. Exchange keeps a
copy in Sent Items for MIME sends.

Graph accepts at most 4 MB per request, i.e. about 3 MB of MIME after base64. Larger mails
are refused with a DeliveryError naming the limit (Graph's upload sessions only work for
attachments of a JSON draft, which would mean rebuilding the mail; see docs/microsoft365.md).

The HTTP work is synchronous (:class:`GraphSession`, shared with the reader) and runs in a
worker thread, so there is one implementation of retries and throttling, not two.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from postline.errors import AuthError, DeliveryError
from postline.protocols.base import Envelope, MailSender, RecipientStatus, SendResult
from postline.protocols.graph_http import (
    GraphSession,
    GraphThrottled,
    describe,
    graph_error_of,
)
from postline.protocols.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.graph")

REQUEST_LIMIT = 4 * 1024 * 1024        # Graph's documented limit of one request body
MAX_MIME_BYTES = REQUEST_LIMIT // 4 * 3  # the most MIME whose base64 fits in it


def header_recipients(message: bytes) -> set[str]:
    """Lower-cased addresses of the To, Cc and Bcc headers of ``message``."""
    headers = BytesHeaderParser().parsebytes(message)
    values = [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name, [])]
    return {addr.lower() for _, addr in getaddresses(values) if addr}


def with_bcc(message: bytes, recipients: tuple[str, ...]) -> bytes:
    """``message`` with a Bcc header naming the recipients its headers do not list (Graph
    takes recipients from the headers only). Returns ``message`` unchanged when none."""
    present = header_recipients(message)
    missing = [r for r in recipients if r.lower() not in present]
    if not missing:
        return message
    eol = b"\r\n" if b"\r\n" in message[:4096] else b"\n"
    return b"Bcc: " + ", ".join(missing).encode("utf-8") + eol + message


def message_id_of(message: bytes) -> str:
    """The Message-ID header of ``message`` ('' when it has none)."""
    return str(BytesHeaderParser().parsebytes(message).get("Message-ID", "")).strip()


class GraphSender(MailSender):
    """:class:`MailSender` over Graph's MIME ``sendMail``; see the module docstring.

    ``send`` raises DeliveryError (``retriable`` for throttling and 5xx; not for other 4xx,
    with Graph's error code and message), AuthError (401 after one token refresh, 403 when
    the app may not send as this mailbox), ConnectError/TLSError (network).
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
        return MAX_MIME_BYTES

    @property
    def supports_smtputf8(self) -> bool:
        return False

    async def send(self, envelope: Envelope, message: bytes, *, message_id: str = ""
                   ) -> SendResult:
        if not envelope.recipients:
            raise DeliveryError("a mail without recipients cannot be sent", code=400)
        if len(message) > MAX_MIME_BYTES:
            raise DeliveryError(
                f"the mail is {len(message):,} bytes; Microsoft Graph accepts at most "
                f"{MAX_MIME_BYTES:,} bytes of MIME in one sendMail request (4 MB base64)",
                code=413, retriable=False,
                hint="share large files as links, or send through an SMTP connection")
        async with self._limit:
            return await asyncio.to_thread(self._send_sync, envelope, message, message_id)

    def _send_sync(self, envelope: Envelope, message: bytes, message_id: str) -> SendResult:
        body = base64.b64encode(with_bcc(message, envelope.recipients))
        try:
            resp = self._s.request("POST", "/sendMail", content=body,
                                   headers={"Content-Type": "text/plain"},
                                   what="sendMail")
        except GraphThrottled as exc:
            raise DeliveryError(exc.message, code=429, retriable=True, hint=exc.hint) from exc
        mid = message_id or message_id_of(message)
        if resp.status_code == 202:
            note = "accepted by Microsoft Graph (202; Graph reports no per-recipient status)"
            log.info("Graph accepted %s for %d recipient(s)", mid or "a mail",
                     len(envelope.recipients))
            return SendResult(
                message_id=mid, accepted=list(envelope.recipients),
                recipients=[RecipientStatus(address=r, accepted=True, code=202, message=note)
                            for r in envelope.recipients],
                server_reply="202 Accepted (Microsoft Graph sendMail)")
        code, text = graph_error_of(resp.content)
        where = f"mailbox {self._s.mailbox or '/me'}"
        if resp.status_code == 403:
            raise AuthError(f"Microsoft Graph refused sendMail for {where} ({describe(resp)})",
                            hint="grant the app Mail.Send (admin consent for application "
                                 "permissions) and check any application access policy")
        if resp.status_code >= 500:
            raise DeliveryError(f"Microsoft Graph failed sendMail for {where} "
                                f"({describe(resp)})", code=resp.status_code, retriable=True,
                                outcome="unknown", hint="it will be retried")
        raise DeliveryError(f"Microsoft Graph refused the mail: {code or 'HTTP'} "
                            f"{resp.status_code}: {text or resp.reason_phrase}",
                            code=resp.status_code, retriable=False,
                            hint="fix the message (recipients, headers) and send again")
