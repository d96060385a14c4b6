"""A misbehaving SMTP server (aiosmtpd) for testing how senders handle failures.

>>> with FaultyServer(mode="tempfail", times=1) as srv:       # doctest: +SKIP
...     ...  # send to 127.0.0.1:srv.port; srv.received holds what was accepted

Modes (each fault applies to the first ``times`` transactions, then the server accepts):

* ``accept``       accept every mail
* ``tempfail``     answer ``451 4.3.0`` to the end of DATA, then accept
* ``reject``       answer ``554 5.7.1`` to the end of DATA (always: ``times`` is ignored)
* ``drop-before``  close the connection when DATA is sent, before the body (not delivered)
* ``drop-after``   take the whole mail, keep it, and close without answering the final dot
                   (the client cannot know the mail arrived)
* ``slow``         wait ``delay`` seconds before answering the end of DATA, then accept

The server runs on its own event loop in a background thread on a free port of 127.0.0.1
(port 0, so tests never collide). It offers 8BITMIME, SMTPUTF8, SIZE and (unless
``pipelining=False``) PIPELINING, which aiosmtpd handles but does not announce by itself.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP

MODES = ("accept", "tempfail", "reject", "drop-before", "drop-after", "slow")


@dataclass(frozen=True)
class Received:
    """One mail the server kept: envelope and the raw content (as the client sent it)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


class _FaultySMTP(SMTP):
    def __init__(self, owner: FaultyServer, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._owner = owner
        owner._sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._sessions.discard(self)
        super().connection_lost(exc)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's naming
        if self._owner._take_fault("drop-before"):
            self._owner.data_commands += 1
            self.transport.close()
            return
        self._owner.data_commands += 1
        await super().smtp_DATA(arg)


class FaultyServer:
    """The handler and the server. ``port`` is set once started; ``received`` lists mails
    the server accepted or kept (``drop-after`` keeps them); ``attempts`` counts ends of DATA.
    """

    def __init__(self, *, mode: str = "accept", times: int = 1, delay: float = 0.0,
                 host: str = "127.0.0.1", size_limit: int = 10 * 1024 * 1024,
                 pipelining: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.mode, self.times, self.delay = mode, times, delay
        self.pipelining = pipelining
        self.host = host
        self.size_limit = size_limit
        self.port = 0
        self.received: list[Received] = []
        self.attempts = 0
        self.data_commands = 0
        # ends of DATA whose next MAIL FROM had already arrived in the same read: the client
        # pipelined the next mail behind this body (RFC 2920 section 3.1)
        self.pipelined = 0
        self._lock = threading.Lock()
        self._sessions: set[_FaultySMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def _take_fault(self, mode: str) -> bool:
        with self._lock:
            if self.mode != mode:
                return False
            if mode == "reject":
                return True
            if self.times > 0:
                self.times -= 1
                return True
            return False

    # aiosmtpd handler hooks
    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any,  # noqa: N802
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:  # noqa: N802
        self.attempts += 1
        buffered = getattr(getattr(server, "_reader", None), "_buffer", b"")
        if b"MAIL FROM" in bytes(buffered).upper():
            self.pipelined += 1
        mail = Received(mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos),
                        content=bytes(envelope.original_content or envelope.content or b""))
        if self._take_fault("tempfail"):
            return "451 4.3.0 Temporary failure, try again later"
        if self._take_fault("reject"):
            return "554 5.7.1 Message rejected: policy violation"
        if self._take_fault("drop-after"):
            self.received.append(mail)
            server.transport.abort()
            return "250 2.0.0 never seen by the client"
        if self.mode == "slow" and self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(mail)
        return f"250 2.0.0 Ok: queued as F{len(self.received)}"

    def start(self) -> FaultyServer:
        """Start serving; returns self with ``port`` set."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)

            async def serve() -> None:
                self._server = await self._loop.create_server(
                    lambda: _FaultySMTP(self, enable_SMTPUTF8=True, decode_data=False,
                                        data_size_limit=self.size_limit,
                                        hostname="faults.example.test"),
                    self.host, 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="smtp-faults")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the faulty SMTP server did not start within 10 s")
        return self

    def stop(self) -> None:
        """Stop serving and close the loop."""
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for session in list(self._sessions):   # clients see EOF at once, not a timeout
                if session.transport is not None:
                    session.transport.abort()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
