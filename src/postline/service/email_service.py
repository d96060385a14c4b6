"""EmailService: the object users call. ``Send`` / ``SendAndForget`` and their async twins.

The delivery engine runs on its own asyncio loop in a background thread, so the synchronous
methods can be called from any thread (each waits on a future) and the async methods from
any event loop (they await the same future, wrapped).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

from postline.errors import DeliveryError
from postline.protocols.base import MailSender, SendResult
from postline.service.engine import Engine, EngineSettings, Job
from postline.service.message import OutgoingMessage, normalise
from postline.service.mime import (
    build,
    check_capabilities,
    check_size,
    message_to_json,
    new_identity,
)
from postline.service.outbox import DeliveryLock, Outbox, OutboxEntry
from postline.service.results import QueuedMail


class EmailService:
    """Sends mail for one EmailService asset. Use :func:`postline.service.open_service`.

    ``Send`` returns the server's :class:`~postline.protocols.base.SendResult` or raises
    MessageError (invalid message, names the field), DeliveryError (``retriable`` says
    whether trying again may help; ``outcome`` is ``rejected``, ``transient`` or
    ``unknown``), ConnectError or AuthError. ``SendAndForget`` returns a
    :class:`QueuedMail` at once, or raises MessageError or QueueFull.
    """

    def __init__(self, *, settings: EngineSettings, open_sender: Callable[[], MailSender],
                 outbox: Outbox, lock: DeliveryLock, throttle, send_queue_size: int = 100,
                 default_from: str | None = None, clock: Callable[[], float] = time.time,
                 sleep=asyncio.sleep) -> None:
        self.name = settings.service
        self.send_queue_size = send_queue_size
        self.default_from = default_from
        self.outbox = outbox
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"postline-service-{self.name}")
        self._thread.start()

        async def start() -> Engine:
            engine = Engine(settings=settings, open_sender=open_sender, outbox=outbox, lock=lock,
                            throttle=throttle, sleep=sleep, clock=clock)
            await engine.start()
            return engine

        self._engine: Engine = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"<EmailService {self.name}>"

    def __enter__(self) -> EmailService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------

    def prepare(self, message: Any) -> OutgoingMessage:
        """Validate ``message`` (any EmailMessage shape) against what is known of the server.

        Returns the normalised message; raises MessageError naming the field.
        """
        out = normalise(message, default_from=self.default_from)
        check_capabilities(out, smtputf8=self._engine.smtputf8)
        if self._engine.max_message_size:
            _, raw = build(out, new_identity(out), smtputf8=bool(self._engine.smtputf8))
            check_size(raw, max_size=self._engine.max_message_size, message=out)
        return out

    def _submit(self, message: Any) -> concurrent.futures.Future:
        self._check_open()
        out = normalise(message, default_from=self.default_from)
        check_capabilities(out, smtputf8=self._engine.smtputf8)
        job = Job(message=out, identity=new_identity(out), future=concurrent.futures.Future())
        self._loop.call_soon_threadsafe(self._engine.submit, job)
        return job.future

    def Send(self, message: Any, *, timeout: float | None = None) -> SendResult:
        """Send ``message`` and return once the server accepted it (see the class doc)."""
        future = self._submit(message)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise DeliveryError(f"Send did not finish within {timeout}s; the mail may still be "
                                f"sent", outcome="unknown") from None

    async def asend(self, message: Any) -> SendResult:
        """Async ``Send``: await it from any event loop."""
        return await asyncio.wrap_future(self._submit(message))

    def SendAndForget(self, message: Any) -> QueuedMail:
        """Validate ``message``, store it durably in the outbox and return at once.

        Raises MessageError (names the field) or QueueFull (``send_queue_size`` unsent mails).
        """
        self._check_open()
        out = self.prepare(message)
        identity = new_identity(out)
        summary = ", ".join(a.addr for a in out.recipients)[:200] + f" | {out.subject[:100]}"
        entry_id = self.outbox.enqueue(service=self.name, message=message_to_json(out),
                                       message_id=identity.message_id, date=identity.date,
                                       summary=summary, limit=self.send_queue_size)
        self._loop.call_soon_threadsafe(self._engine.wake)
        return QueuedMail(id=entry_id, message_id=identity.message_id, service=self.name)

    async def asend_and_forget(self, message: Any) -> QueuedMail:
        """Async ``SendAndForget`` (the disk write runs in a worker thread)."""
        return await asyncio.to_thread(self.SendAndForget, message)

    send = Send
    send_and_forget = SendAndForget

    # -- the outbox ------------------------------------------------------------------------

    def queued(self, *, state: str | None = None, limit: int = 1000) -> list[OutboxEntry]:
        """Outbox entries of this service, newest first."""
        return self.outbox.list(self.name, state=state, limit=limit)

    def retry(self, *, entry_id: int | None = None, all_failed: bool = False) -> int:
        """Queue failed mails (or one failed/unknown mail) again; returns how many."""
        n = self.outbox.requeue(self.name, entry_id=entry_id, all_failed=all_failed)
        if n and not self._closed:
            self._loop.call_soon_threadsafe(self._engine.wake)
        return n

    @property
    def delivers_outbox(self) -> bool:
        """True when this process holds the delivery lock for the service's outbox."""
        return self._engine.owner

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until no queued or sending mail of this service is left (True) or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.outbox.counts(self.name)
            if counts["queued"] == 0 and counts["sending"] == 0 and self._engine.idle:
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Finish running attempts (up to ``timeout``), then stop. Queued mails stay queued
        on disk and are sent by the next process that opens this service."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            asyncio.run_coroutine_threadsafe(self._engine.stop(timeout=timeout),
                                             self._loop).result(timeout + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
            self.outbox.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DeliveryError(f"EmailService {self.name} is closed", hint="open it again")
