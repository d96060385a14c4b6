"""EmailService: the object users call. ``Send`` / ``SendAndForget`` and their async twins.

The delivery engine runs on its own asyncio loop in a background thread, so the synchronous
methods can be called from any thread (each waits on a future) and the async methods from
any event loop (they await the same future, wrapped).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from postline.errors import DeliveryError, DeliveryOutcome
from postline.limiter import SlidingWindow
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
from postline.service.results import QueuedMail
from postline.state.locks import ProcessLock
from postline.state.outbox import Outbox, OutboxEntry, OutboxState


class EmailService:
    """Sends mail for one EmailService asset. Use :func:`postline.service.open_service`.

    ``Send`` returns the server's :class:`~postline.protocols.base.SendResult` or raises
    MessageError (invalid message, names the field), DeliveryError (``retriable`` says
    whether trying again may help; ``outcome`` is ``rejected``, ``transient`` or
    ``unknown``), ConnectError or AuthError. ``SendAndForget`` returns a
    :class:`QueuedMail` at once, or raises MessageError or QueueFull.
    """

    def __init__(self, *, settings: EngineSettings, open_sender: Callable[[], MailSender],
                 outbox: Outbox, lock: ProcessLock, throttle: SlidingWindow, send_queue_size: int = 100,
                 default_from: str | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.name = settings.service
        self.send_queue_size = send_queue_size
        self.default_from = default_from
        self.outbox = outbox
        self._closed = False
        # Send jobs cross from the callers' threads to the engine's loop through this deque;
        # one call_soon_threadsafe wakes the loop for a whole burst (each one is a write to
        # the loop's self-pipe, and every system call lets another thread take the GIL)
        self._inbox: deque[Job] = deque()
        self._drain_scheduled = False
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = \
            weakref.WeakKeyDictionary()
        self._batchers_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"postline-service-{self.name}")
        self._thread.start()

        async def start() -> Engine:
            engine = Engine(settings=settings, open_sender=open_sender, outbox=outbox, lock=lock,
                            throttle=throttle, sleep=sleep, clock=clock)
            await engine.start()
            return engine

        try:
            self._engine: Engine = asyncio.run_coroutine_threadsafe(start(), self._loop
                                                                    ).result()
        except BaseException:
            # e.g. the outbox cannot be recovered (disk full): no one will call close(), so
            # do not leave the loop thread, the outbox database and the lock behind
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
            lock.release()
            outbox.close()
            raise
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

    def _job(self, message: Any, future: Any) -> Job:
        self._check_open()
        out = normalise(message, default_from=self.default_from)
        check_capabilities(out, smtputf8=self._engine.smtputf8)
        return Job(message=out, identity=new_identity(out), future=future)

    def _hand_over(self, job: Job) -> None:
        self._inbox.append(job)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:   # the loop was closed by close() meanwhile
                self._drain_scheduled = False
                self._inbox.clear()
                raise DeliveryError(f"EmailService {self.name} is closed",
                                    hint="open it again") from None

    def _drain(self) -> None:
        """On the loop: move every handed-over job into the engine's queue."""
        # cleared before draining: a caller that still saw True appended its job before
        # this point, so the loop below sees it; a later caller schedules a new drain
        self._drain_scheduled = False
        inbox, submit = self._inbox, self._engine.submit
        while inbox:
            submit(inbox.popleft())

    def Send(self, message: Any, *, timeout: float | None = None) -> SendResult:
        """Send ``message`` and return once the server accepted it (see the class doc)."""
        waiter = _SyncWaiter()
        self._hand_over(self._job(message, waiter))
        if not waiter.wait(timeout):
            raise DeliveryError(f"Send did not finish within {timeout}s; the mail may still be "
                                f"sent", outcome=DeliveryOutcome.UNKNOWN)
        if waiter.error is not None:
            raise waiter.error
        result: SendResult = waiter.result
        return result

    async def asend(self, message: Any) -> SendResult:
        """Async ``Send``: await it from any event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._hand_over(self._job(message, _AsyncWaiter(future, self._batcher(loop))))
        result: SendResult = await future
        return result

    def _batcher(self, loop: asyncio.AbstractEventLoop) -> _Batcher:
        batcher = self._batchers.get(loop)
        if batcher is None:
            with self._batchers_lock:
                batcher = self._batchers.get(loop)
                if batcher is None:
                    batcher = self._batchers[loop] = _Batcher(engine_loop=self._loop,
                                                              caller_loop=loop)
        return batcher

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

    def outbox_holder_pid(self) -> int | None:
        """The pid of the process that delivers this service's outbox (holds its lock), or
        None when no process does or the pid cannot be read."""
        return self._engine.lock.holder_pid()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until no queued or sending mail of this service is left (True) or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.outbox.counts(self.name)
            if (counts[OutboxState.QUEUED] == 0 and counts[OutboxState.SENDING] == 0
                    and self._engine.idle):
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
            while self._inbox:      # handed over after the engine stopped: never sent
                job = self._inbox.popleft()
                if job.future is not None and not job.future.done():
                    job.future.set_exception(DeliveryError(
                        "the Email Service was closed before this mail was sent",
                        retriable=True))
            self.outbox.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DeliveryError(f"EmailService {self.name} is closed", hint="open it again")


class _Batcher:
    """Completes the asyncio futures of one caller loop in batches: one
    ``call_soon_threadsafe`` per engine loop iteration instead of one per mail. Used only
    on the engine's loop."""

    def __init__(self, *, engine_loop: asyncio.AbstractEventLoop,
                 caller_loop: asyncio.AbstractEventLoop) -> None:
        self._engine_loop = engine_loop
        self._caller_loop = weakref.ref(caller_loop)
        self._items: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []

    def add(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self._items.append((future, result, error))
        if len(self._items) == 1:
            self._engine_loop.call_soon(self._flush)

    def _flush(self) -> None:
        items, self._items = self._items, []
        loop = self._caller_loop()
        if loop is None or loop.is_closed():
            return    # nobody is waiting any more
        try:
            loop.call_soon_threadsafe(_complete, items)
        except RuntimeError:   # closed between the check and the call
            pass


def _complete(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():      # cancelled by the caller (the mail was still sent)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _AsyncWaiter:
    """Stands in for the engine's future of an ``asend`` job (done/set_result/set_exception,
    called on the engine's loop)."""

    __slots__ = ("_batcher", "_done", "_future")

    def __init__(self, future: asyncio.Future[Any], batcher: _Batcher) -> None:
        self._future = future
        self._batcher = batcher
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        self._done = True
        self._batcher.add(self._future, result, None)

    def set_exception(self, error: BaseException) -> None:
        self._done = True
        self._batcher.add(self._future, None, error)


class _SyncWaiter:
    """What a ``Send`` caller blocks on: a pre-locked lock the engine releases once. Lighter
    than a ``concurrent.futures.Future`` (no Condition, no callbacks), which shows at
    thousands of mails a second. set_result/set_exception are called once, on one thread."""

    __slots__ = ("_done", "_lock", "error", "result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        self.result, self._done = result, True
        self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        self.error, self._done = error, True
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        """True once finished; False when ``timeout`` seconds passed first."""
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)
