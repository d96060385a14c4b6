"""SMTP sender: a small pool of persistent sessions, each sending with PIPELINING.

``send()`` takes a free session (or opens one, up to ``max_connections``), writes
``MAIL FROM`` + every ``RCPT TO`` + ``DATA`` as one group where the server offers
PIPELINING, then the body. A session the server dropped is replaced and the mail tried once
more on the new one -- but only while nothing was handed over: a connection lost after the
final dot of DATA is reported as ``DeliveryError(outcome="unknown")`` and not retried, since
the server may already have queued the mail.

Mails beyond ``max_connections`` wait for a session. When a session is about to write the
body of its mail and a mail is waiting, the waiting mail's ``MAIL FROM``/``RCPT TO``/``DATA``
go out in the same write, right after the final dot (RFC 2920 section 3.1 allows the message
content as the first "command" of a group): in a steady stream a mail then costs one round
trip instead of two. Nothing of the next mail's body is sent before its own ``354``, so a
connection lost there still means "not handed over" for it, and it is retried on a new
session; and nothing else (no RSET) is ever written behind pipelined commands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from postline.auth.credentials import Login
from postline.errors import ConnectTimeout, DeliveryError, DeliveryOutcome, MessageError
from postline.protocols.base import Envelope, MailSender, RecipientStatus, SendResult
from postline.protocols.capability_names import SmtpExtension
from postline.protocols.smtp_session import Dropped, Reply, SmtpSession, encode_body
from postline.protocols.smtp_status import SMTPStatus
from postline.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.smtp")

_FORBIDDEN = frozenset("\r\n\0<>")


def _check_address(addr: str, what: str) -> bytes:
    if not _FORBIDDEN.isdisjoint(addr) or addr.strip() != addr:
        raise MessageError(f"{what} address {addr!r} contains characters not allowed in an "
                           "SMTP envelope (CR, LF, NUL, <, > or spaces at the ends)",
                           field=what)
    return addr.encode("utf-8")


@dataclass(eq=False)
class _Mail:
    """One mail on its way: envelope checked, body encoded; ``turn`` is set while it waits
    for a session and resolves to (session or None, whether its commands were sent)."""

    envelope: Envelope
    sender: bytes
    rcpts: list[bytes]
    body: bytes
    size: int
    message_id: str
    commands: list[bytes] | None = None
    turn: asyncio.Future | None = None


class SmtpSender(MailSender):
    """:class:`MailSender` over SMTP. Use one per event loop."""

    # A caller that keeps this many sends per session in flight lets each session pipeline
    # the next mail's envelope behind the current body (the Email Service engine reads it).
    sends_per_session = 2

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
        self._in_use = 0                      # slots taken, at most max_connections
        self._waiting: deque[_Mail] = deque()  # mails waiting for a slot, in order
        self._reaper: asyncio.Task | None = None
        self._size: int | None = None
        self._smtputf8 = False

    # -- pool -------------------------------------------------------------------------------

    async def _new_session(self) -> SmtpSession:
        s = SmtpSession(endpoint=self.endpoint, login=self._login, trace=self._trace,
                        local_hostname=self._local_hostname)
        await s.open()
        size = s.info.extensions.get(SmtpExtension.SIZE, "")
        self._size = int(size) if size.isdigit() and int(size) > 0 else None
        self._smtputf8 = s.has(SmtpExtension.SMTPUTF8)
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
        """Open one session now, so bad settings fail here and not on the first mail
        (nothing to do while every slot is sending)."""
        if self._in_use >= self._max:
            return
        self._in_use += 1
        s = None
        try:
            s = await self._take()
        finally:
            self._release(s, None)

    # -- slots: at most max_connections sessions send at once --------------------------------

    async def _acquire(self, mail: _Mail) -> tuple[SmtpSession | None, bool]:
        """Wait for a slot. Returns the session handed over with it (None: take one) and
        whether the mail's commands were already written on it."""
        if self._in_use < self._max and not self._waiting:
            self._in_use += 1
            return None, False
        mail.turn = asyncio.get_running_loop().create_future()
        self._waiting.append(mail)
        try:
            return await mail.turn
        except asyncio.CancelledError:
            if mail.turn.done() and not mail.turn.cancelled():
                s, sent = mail.turn.result()   # handed over just as we were cancelled
                if s is not None and sent:
                    s.abort()   # our commands are on the wire: closing drops the transaction
                    s = None
                self._release(s, None)
            else:
                try:
                    self._waiting.remove(mail)
                except ValueError:
                    pass        # taken for pipelining: the releaser sees the cancelled turn
            raise

    def _release(self, s: SmtpSession | None, nxt: _Mail | None) -> None:
        """Give the slot (and the session, if still usable) to ``nxt`` (whose commands were
        pipelined on ``s``), else to the first waiting mail, else back to the pool."""
        if s is not None and not s.alive:
            s.abort()
            s = None
        if nxt is not None:
            assert nxt.turn is not None
            if not nxt.turn.done():
                nxt.turn.set_result((s, s is not None))
                return
            if s is not None:   # its waiter is gone, its transaction is open: drop it
                s.abort()
                s = None
        while self._waiting:
            mail = self._waiting.popleft()
            assert mail.turn is not None
            if not mail.turn.done():
                mail.turn.set_result((s, False))
                return
        self._in_use -= 1
        if s is not None:
            self._give_back(s)

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
        mail = _Mail(envelope=envelope, sender=_check_address(envelope.sender, "sender"),
                     rcpts=[_check_address(r, "recipient") for r in envelope.recipients],
                     body=encode_body(message), size=len(message), message_id=message_id)
        s, sent = await self._acquire(mail)
        nxt: list[_Mail] = []   # a waiting mail whose commands followed this body
        try:
            for attempt in (0, 1):
                if s is None:
                    s = await self._take()
                try:
                    return await self._transaction(s, mail, sent=sent, nxt=nxt)
                except Dropped:
                    s.abort()
                    s, sent = None, False
                    if attempt == 1:
                        raise
                    log.info("SMTP session to %s was dropped; retrying on a new one",
                             self.endpoint.host)
                except DeliveryError:
                    # the final reply ends a transaction: with the next mail's commands
                    # already behind it, the session must not be RSET
                    if not nxt and not await self._reset(s):
                        s = None
                    raise
                except BaseException:
                    s.abort()
                    s = None
                    raise
            raise AssertionError("unreachable")
        finally:
            self._release(s, nxt[0] if nxt else None)

    async def _reset(self, s: SmtpSession) -> bool:
        """RSET after a failed transaction so the session can be reused; False (and the
        session closed) when it cannot."""
        if not s.alive:
            s.abort()
            return False
        try:
            if (await s.command(b"RSET")).code == SMTPStatus.COMPLETED:
                return True
        except Exception:  # noqa: BLE001 - a session that cannot RSET is closed
            pass
        s.abort()
        return False

    def _commands(self, s: SmtpSession, mail: _Mail) -> list[bytes]:
        """MAIL FROM (with SIZE, BODY, SMTPUTF8 as the session allows), RCPT TO.., DATA.
        Raises DeliveryError when the session cannot take the mail."""
        host = f"{s.host}:{s.port}"
        params = b""
        limit = s.info.extensions.get(SmtpExtension.SIZE, "")
        if limit.isdigit() and int(limit) and mail.size > int(limit):
            raise DeliveryError(f"the mail is {mail.size} bytes but {host} accepts at most "
                                f"{limit}", code=SMTPStatus.STORAGE_EXCEEDED.value,
                                hint="send smaller attachments")
        if s.has(SmtpExtension.SIZE):
            params += b" SIZE=%d" % mail.size
        if s.has(SmtpExtension.EIGHTBITMIME) and not mail.body.isascii():
            params += b" BODY=8BITMIME"
        if mail.envelope.smtputf8 or not (mail.sender.isascii()
                                          and all(r.isascii() for r in mail.rcpts)):
            if not s.has(SmtpExtension.SMTPUTF8):
                raise DeliveryError(f"{host} does not support SMTPUTF8, needed for the "
                                    "internationalised addresses of this mail",
                                    code=SMTPStatus.MAILBOX_NAME_INVALID.value,
                                    hint="use ASCII addresses with this server")
            params += b" SMTPUTF8"
        commands = [b"MAIL FROM:<" + mail.sender + b">" + params]
        commands += [b"RCPT TO:<" + r + b">" for r in mail.rcpts]
        commands.append(b"DATA")
        return commands

    def _pipeline_next(self, s: SmtpSession, nxt: list[_Mail]) -> bytes:
        """The commands of the first waiting mail, taken off the queue into ``nxt``, to go
        out right after this body; b"" when there is none or it does not fit this session."""
        if not self._waiting or not s.has(SmtpExtension.PIPELINING):
            return b""
        mail = self._waiting[0]
        if mail.turn is None or mail.turn.done():
            return b""
        try:
            mail.commands = self._commands(s, mail)
        except DeliveryError:
            return b""          # it fails on its own turn, with its own error
        self._waiting.popleft()
        nxt.append(mail)
        return b"".join(c + b"\r\n" for c in mail.commands)

    async def _transaction(self, s: SmtpSession, mail: _Mail, *, sent: bool,
                           nxt: list[_Mail]) -> SendResult:
        host = f"{s.host}:{s.port}"
        env, rcpts = mail.envelope, mail.rcpts
        if sent:        # pipelined behind the previous mail's body: read the replies
            assert mail.commands is not None
            commands = mail.commands
            replies = await self._exchange(s, [], count=len(commands))
        else:
            commands = mail.commands = self._commands(s, mail)
            replies = await self._exchange(s, commands)
        mail_reply, rcpt_replies = replies[0], replies[1:1 + len(rcpts)]
        data_reply = replies[-1] if len(replies) == len(commands) else None
        statuses = [RecipientStatus(address=a, accepted=SMTPStatus.positive(r.code),
                                    code=r.code, message=r.text)
                    for a, r in zip(env.recipients, rcpt_replies, strict=False)]
        if not SMTPStatus.positive(mail_reply.code):
            raise DeliveryError(f"{host} refused the sender <{env.sender}>: {mail_reply}",
                                code=mail_reply.code,
                                retriable=SMTPStatus.transient(mail_reply.code))
        accepted = [st for st in statuses if st.accepted]
        if not accepted:
            if data_reply is not None and data_reply.code == SMTPStatus.START_INPUT:
                await self._exchange(s, [], raw=b".\r\n")  # close the empty DATA
            detail = "; ".join(f"{st.address}: {st.code} {st.message}" for st in statuses)
            raise DeliveryError(f"{host} refused every recipient: {detail}",
                                code=statuses[0].code if statuses else None,
                                retriable=all(SMTPStatus.transient(st.code) for st in statuses))
        if data_reply is None or data_reply.code != SMTPStatus.START_INPUT:
            raise DeliveryError(f"{host} refused DATA: {data_reply}",
                                code=data_reply.code if data_reply else None,
                                retriable=bool(data_reply
                                               and SMTPStatus.transient(data_reply.code)))
        try:
            final = (await self._exchange(s, [], raw=mail.body + self._pipeline_next(s, nxt))
                     )[0]
        except (Dropped, ConnectTimeout, OSError) as exc:
            s.abort()
            raise DeliveryError(f"the connection to {host} was lost after the mail was sent: "
                                "unknown whether the server accepted the mail; not retried "
                                "to avoid a duplicate", retriable=False,
                                outcome=DeliveryOutcome.UNKNOWN, says_not_retried=True,
                                hint="check the recipient's mailbox or the server's log"
                                ) from exc
        if not SMTPStatus.positive(final.code):
            raise DeliveryError(f"{host} did not accept the mail: {final}", code=final.code,
                                retriable=SMTPStatus.transient(final.code))
        refused = [st for st in statuses if not st.accepted]
        return SendResult(message_id=mail.message_id,
                          accepted=[st.address for st in accepted],
                          refused=refused, recipients=statuses, server_reply=str(final))

    async def _exchange(self, s: SmtpSession, commands: list[bytes], *, raw: bytes = b"",
                        count: int = 0) -> list[Reply]:
        """Write ``commands`` (as one group where PIPELINING is offered) or ``raw`` and read
        one reply each; with ``count``, write nothing and read that many replies. Without
        PIPELINING, stop after a refused MAIL FROM."""
        timeout = self.endpoint.read_timeout
        try:
            async with asyncio.timeout(timeout):
                if count:
                    return [await s.read_reply() for _ in range(count)]
                if raw:
                    s.write(raw)
                    return [await s.read_reply()]
                if s.has(SmtpExtension.PIPELINING):
                    s.write(b"".join(c + b"\r\n" for c in commands))
                    return [await s.read_reply() for _ in commands]
                replies = []
                for i, c in enumerate(commands):
                    s.write(c + b"\r\n")
                    replies.append(await s.read_reply())
                    if i == 0 and not SMTPStatus.positive(replies[0].code):
                        break
                    if i == len(commands) - 2 and not any(SMTPStatus.positive(r.code)
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
