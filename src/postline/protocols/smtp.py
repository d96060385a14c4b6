"""SMTP sender: a small pool of persistent sessions, each sending with PIPELINING.

``send()`` takes a free session (or opens one, up to ``max_connections``), writes
``MAIL FROM`` + every ``RCPT TO`` + ``DATA`` as one group where the server offers
PIPELINING, then the body. A session the server dropped is replaced and the mail tried once
more on the new one -- but only while nothing was handed over: a connection lost after the
final dot of DATA is reported as ``DeliveryError(outcome="unknown")`` and not retried, since
the server may already have queued the mail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from postline.auth.credentials import Login
from postline.errors import ConnectTimeout, DeliveryError, MessageError
from postline.protocols.base import Envelope, MailSender, RecipientStatus, SendResult
from postline.protocols.smtp_session import Dropped, Reply, SmtpSession, encode_body
from postline.protocols.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.smtp")

_FORBIDDEN = set("\r\n\0<>")


def _check_address(addr: str, what: str) -> bytes:
    if any(c in _FORBIDDEN for c in addr) or addr.strip() != addr:
        raise MessageError(f"{what} address {addr!r} contains characters not allowed in an "
                           "SMTP envelope (CR, LF, NUL, <, > or spaces at the ends)",
                           field=what)
    return addr.encode("utf-8")


class SmtpSender(MailSender):
    """:class:`MailSender` over SMTP. Use one per event loop."""

    def __init__(self, *, endpoint: Any, login: Login, max_connections: int = 4,
                 idle_timeout: float = 60.0, trace: Trace = NULL_TRACE,
                 local_hostname: str | None = None) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.endpoint = endpoint
        self._login = login
        self._max = max_connections
        self._idle_timeout = idle_timeout
        self._trace = trace
        self._local_hostname = local_hostname
        self._free: list[SmtpSession] = []
        self._slots: asyncio.Semaphore | None = None
        self._reaper: asyncio.Task | None = None
        self._size: int | None = None
        self._smtputf8 = False

    # -- pool -------------------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        return self._slots

    async def _new_session(self) -> SmtpSession:
        s = SmtpSession(endpoint=self.endpoint, login=self._login, trace=self._trace,
                        local_hostname=self._local_hostname)
        await s.open()
        size = s.info.extensions.get("SIZE", "")
        self._size = int(size) if size.isdigit() and int(size) > 0 else None
        self._smtputf8 = s.has("SMTPUTF8")
        if self._reaper is None and self._idle_timeout > 0:
            self._reaper = asyncio.create_task(self._reap(), name="postline-smtp-reaper")
        return s

    async def _take(self) -> SmtpSession:
        while self._free:
            s = self._free.pop()
            if s.alive:
                return s
            s.abort()
        return await self._new_session()

    def _give_back(self, s: SmtpSession) -> None:
        if s.alive:
            s.last_used = time.monotonic()
            self._free.append(s)
        else:
            s.abort()

    async def _reap(self) -> None:
        """Close sessions idle for longer than ``idle_timeout`` (servers drop them anyway)."""
        while True:
            await asyncio.sleep(max(1.0, self._idle_timeout / 4))
            now = time.monotonic()
            stale = [s for s in self._free if now - s.last_used > self._idle_timeout]
            for s in stale:
                self._free.remove(s)
                await s.quit()

    async def connect(self) -> None:
        """Open one session now, so bad settings fail here and not on the first mail."""
        async with self._semaphore():
            self._give_back(await self._take())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        free, self._free = self._free, []
        await asyncio.gather(*(s.quit() for s in free), return_exceptions=True)

    @property
    def max_message_size(self) -> int | None:
        return self._size

    @property
    def supports_smtputf8(self) -> bool:
        return self._smtputf8

    # -- sending -----------------------------------------------------------------------------

    async def send(self, envelope: Envelope, message: bytes, *, message_id: str = ""
                   ) -> SendResult:
        """Send one mail; see :class:`MailSender`. Raises DeliveryError, MessageError,
        ConnectError/TLSError/AuthError."""
        if not envelope.recipients:
            raise MessageError("the mail has no recipients", field="recipients")
        sender = _check_address(envelope.sender, "sender")
        rcpts = [_check_address(r, "recipient") for r in envelope.recipients]
        body = encode_body(message)
        async with self._semaphore():
            for attempt in (0, 1):
                s = await self._take()
                try:
                    result = await self._transaction(s, envelope, sender, rcpts, body,
                                                     len(message), message_id)
                except Dropped:
                    s.abort()
                    if attempt == 1:
                        raise
                    log.info("SMTP session to %s was dropped; retrying on a new one",
                             self.endpoint.host)
                    continue
                except DeliveryError:
                    await self._reset(s)
                    raise
                except BaseException:
                    s.abort()
                    raise
                self._give_back(s)
                return result
        raise AssertionError("unreachable")

    async def _reset(self, s: SmtpSession) -> None:
        """RSET after a failed transaction so the session can be reused, else drop it."""
        if not s.alive:
            s.abort()
            return
        try:
            if (await s.command(b"RSET")).code == 250:
                self._give_back(s)
                return
        except Exception:  # noqa: BLE001 - a session that cannot RSET is closed
            pass
        s.abort()

    async def _transaction(self, s: SmtpSession, env: Envelope, sender: bytes,
                           rcpts: list[bytes], body: bytes, size: int, message_id: str
                           ) -> SendResult:
        host = f"{s.host}:{s.port}"
        params = b""
        limit = s.info.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) and size > int(limit):
            raise DeliveryError(f"the mail is {size} bytes but {host} accepts at most {limit}",
                                code=552, hint="send smaller attachments")
        if s.has("SIZE"):
            params += b" SIZE=%d" % size
        if s.has("8BITMIME") and not body.isascii():
            params += b" BODY=8BITMIME"
        if env.smtputf8 or not (sender.isascii() and all(r.isascii() for r in rcpts)):
            if not s.has("SMTPUTF8"):
                raise DeliveryError(f"{host} does not support SMTPUTF8, needed for the "
                                    "internationalised addresses of this mail", code=553,
                                    hint="use ASCII addresses with this server")
            params += b" SMTPUTF8"
        commands = [b"MAIL FROM:<" + sender + b">" + params]
        commands += [b"RCPT TO:<" + r + b">" for r in rcpts]
        commands.append(b"DATA")
        replies = await self._exchange(s, commands)
        mail_reply, rcpt_replies = replies[0], replies[1:1 + len(rcpts)]
        data_reply = replies[-1] if len(replies) == len(commands) else None
        statuses = [RecipientStatus(address=a, accepted=r.code // 100 == 2, code=r.code,
                                    message=r.text)
                    for a, r in zip(env.recipients, rcpt_replies, strict=False)]
        if mail_reply.code // 100 != 2:
            raise DeliveryError(f"{host} refused the sender <{env.sender}>: {mail_reply}",
                                code=mail_reply.code, retriable=mail_reply.code // 100 == 4)
        accepted = [st for st in statuses if st.accepted]
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                await self._exchange(s, [], raw=b".\r\n")  # close the empty DATA
            detail = "; ".join(f"{st.address}: {st.code} {st.message}" for st in statuses)
            raise DeliveryError(f"{host} refused every recipient: {detail}",
                                code=statuses[0].code if statuses else None,
                                retriable=all(st.code // 100 == 4 for st in statuses))
        if data_reply is None or data_reply.code != 354:
            raise DeliveryError(f"{host} refused DATA: {data_reply}",
                                code=data_reply.code if data_reply else None,
                                retriable=bool(data_reply and data_reply.code // 100 == 4))
        try:
            final = (await self._exchange(s, [], raw=body))[0]
        except (Dropped, ConnectTimeout, OSError) as exc:
            s.abort()
            raise DeliveryError(f"the connection to {host} was lost after the mail was sent: "
                                "unknown whether the server accepted the mail; not retried "
                                "to avoid a duplicate", retriable=False, outcome="unknown",
                                hint="check the recipient's mailbox or the server's log"
                                ) from exc
        if final.code // 100 != 2:
            raise DeliveryError(f"{host} did not accept the mail: {final}", code=final.code,
                                retriable=final.code // 100 == 4)
        refused = [st for st in statuses if not st.accepted]
        return SendResult(message_id=message_id, accepted=[st.address for st in accepted],
                          refused=refused, recipients=statuses, server_reply=str(final))

    async def _exchange(self, s: SmtpSession, commands: list[bytes], *, raw: bytes = b""
                        ) -> list[Reply]:
        """Write ``commands`` (as one group where PIPELINING is offered) or ``raw`` and read
        one reply each. Without PIPELINING, stop after a refused MAIL FROM."""
        timeout = self.endpoint.read_timeout
        try:
            async with asyncio.timeout(timeout):
                if raw:
                    s.write(raw)
                    return [await s.read_reply()]
                if s.has("PIPELINING"):
                    s.write(b"".join(c + b"\r\n" for c in commands))
                    return [await s.read_reply() for _ in commands]
                replies = []
                for i, c in enumerate(commands):
                    s.write(c + b"\r\n")
                    replies.append(await s.read_reply())
                    if i == 0 and replies[0].code // 100 != 2:
                        break
                    if i == len(commands) - 2 and not any(r.code // 100 == 2
                                                          for r in replies[1:]):
                        break  # no recipient accepted: do not send DATA
                return replies
        except TimeoutError as exc:
            s.abort()
            raise ConnectTimeout(f"SMTP server {s.host}:{s.port} did not answer within "
                                 f"{timeout:g} s", hint="the server is slow or stuck; raise "
                                 "read_timeout if it is just slow") from exc
        except (ConnectionError, OSError) as exc:
            raise Dropped(f"SMTP server {s.host}:{s.port} closed the session: {exc}") from exc
