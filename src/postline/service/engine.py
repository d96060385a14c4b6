"""The delivery engine: one asyncio loop that sends the mails of one EmailService.

Send jobs (a caller waits on a future) and outbox jobs (SendAndForget, durable) share one
ready queue, one throttle and ``max_connections`` workers; each worker takes a job, waits
for a throttle slot and hands the mail to the :class:`MailSender`, which keeps its SMTP
sessions open between mails. The sender is opened on the first mail and closed after
``idle_timeout`` seconds without work.

Outcomes (see :mod:`postline.state.outbox` for the durable states):

* accepted                       -> result (Send) / ``sent``
* MessageError, 5xx, AuthError   -> raised at once (Send) / ``failed`` with the reason
* the mail cannot be built        -> MessageError (Send) / ``failed``: nothing was sent
* 4xx, connection lost before    -> retried after ``min_backoff * 2**n`` (capped at
  the end of DATA, ConnectError     ``max_backoff``), up to ``retry.max_attempts`` attempts
* connection lost after the      -> DeliveryError(outcome="unknown") / ``unknown``; never
  final dot, or anything else       retried: the server may already have the mail
  unexpected during the send
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from postline.errors import (
    AuthError,
    ConnectError,
    DeliveryError,
    DeliveryOutcome,
    MessageError,
    PostlineError,
)
from postline.limiter import SlidingWindow
from postline.protocols.base import MailSender, SendResult
from postline.retry import backoff
from postline.service.message import OutgoingMessage
from postline.service.mime import Identity, build, check_size, message_from_json
from postline.service.results import result_to_json
from postline.state.locks import ProcessLock
from postline.state.outbox import Outbox, OutboxState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    service: str
    max_connections: int = 4
    idle_timeout: float = 30.0
    max_attempts: int = 5
    min_backoff: float = 2.0
    max_backoff: float = 300.0
    poll_interval: float = 1.0     # how often the outbox is checked for rows of other processes


@dataclass
class Job:
    message: OutgoingMessage
    identity: Identity
    # Send/asend: what the caller waits on (done/set_result/set_exception, called on the loop)
    future: Any = None
    entry_id: int | None = None                        # SendAndForget: outbox row
    attempts: int = 0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


class Engine:
    """Runs on one event loop; every public coroutine must be awaited on that loop."""

    def __init__(self, *, settings: EngineSettings, open_sender: Callable[[], MailSender],
                 outbox: Outbox, lock: ProcessLock, throttle: SlidingWindow,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.s = settings
        self._open_sender = open_sender
        self.outbox = outbox
        self.lock = lock
        self.throttle = throttle
        self._throttled = throttle.limited   # no limit: skip the await
        self._sleep = sleep
        self._clock = clock
        self._sender: MailSender | None = None
        self._sender_lock = asyncio.Lock()
        self._ready: asyncio.Queue[Job] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._inflight_ids: set[int] = set()
        self._busy = 0
        self._last_activity = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._workers = 0
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self.smtputf8: bool | None = None      # learnt from the sender once connected
        self.max_message_size: int | None = None
        self.owner = False
        self._stopping = False

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the outbox if no other process delivers it, then start the workers, the
        outbox feeder and the idle reaper (call on the loop)."""
        await self._take_outbox()
        self._add_workers(1)
        self._tasks.append(asyncio.create_task(self._feeder(), name="outbox-feeder"))
        self._tasks.append(asyncio.create_task(self._reaper(), name="idle-reaper"))

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Let running attempts finish (up to ``timeout``), fail waiting Send jobs, close."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in self._retry_handles:
            handle.cancel()
        while not self._ready.empty():
            job = self._ready.get_nowait()
            if job.future is not None and not job.future.done():
                job.future.set_exception(DeliveryError(
                    "the Email Service was closed before this mail was sent", retriable=True))
        await self._close_sender()
        self.lock.release()

    def submit(self, job: Job) -> None:
        """Queue a Send job (call on the loop); fails it at once when stopping."""
        if self._stopping:
            if job.future is not None and not job.future.done():
                job.future.set_exception(DeliveryError(
                    "the Email Service was closed before this mail was sent", retriable=True))
            return
        self._ready.put_nowait(job)

    def wake(self) -> None:
        """Tell the feeder that the outbox has new rows (call on the loop)."""
        self._wake.set()

    @property
    def idle(self) -> bool:
        return self._busy == 0 and self._ready.empty() and not self._inflight_ids

    # -- workers ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            job = await self._ready.get()
            self._busy += 1
            try:
                if self._throttled:
                    await self.throttle.acquire(self._sleep)
                await self._attempt(job)
            except asyncio.CancelledError:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(DeliveryError(
                        "the Email Service was closed while sending; the outcome is unknown",
                        outcome=DeliveryOutcome.UNKNOWN))
                raise
            except Exception as exc:  # a bug must not kill the worker and strand the queue
                log.exception("unexpected error while sending %s", job.identity.message_id)
                await self._finish(job, error=DeliveryError(
                    f"unexpected error while sending: {exc!r}; the outcome is unknown",
                    outcome=DeliveryOutcome.UNKNOWN))
            finally:
                self._busy -= 1
                self._last_activity = time.monotonic()

    async def _attempt(self, job: Job) -> None:
        try:
            sender = await self._get_sender()
        except (ConnectError, AuthError) as exc:
            return await self._failed_attempt(job, exc)
        except PostlineError as exc:   # secret unreadable, bad ca_file, ...: nothing was sent
            return await self._finish(job, error=exc)
        try:
            envelope, raw = build(job.message, job.identity, smtputf8=sender.supports_smtputf8)
            check_size(raw, max_size=sender.max_message_size, message=job.message)
        except MessageError as exc:
            return await self._finish(job, error=exc)
        except Exception as exc:  # noqa: BLE001 -- before any I/O: failed, never unknown
            log.exception("mail %s cannot be built", job.identity.message_id)
            return await self._finish(job, error=MessageError(
                f"the mail cannot be built ({type(exc).__name__}: {exc}); nothing was sent",
                field="message"))
        job.attempts += 1
        if job.entry_id is not None:
            # committed before the first SMTP command: a crash from here on leaves the row
            # in ``sending`` and the restart marks it unknown instead of sending it twice
            await asyncio.to_thread(self.outbox.mark, job.entry_id, OutboxState.SENDING, attempt=True)
        try:
            result = await sender.send(envelope, raw, message_id=job.identity.message_id)
        except MessageError as exc:     # the sender refused the envelope before any I/O
            return await self._finish(job, error=exc)
        except (DeliveryError, ConnectError, AuthError) as exc:
            return await self._failed_attempt(job, exc, counted=True)
        await self._finish(job, result=result)

    async def _failed_attempt(self, job: Job, exc: PostlineError, *, counted: bool = False
                              ) -> None:
        """One attempt of ``job`` failed with ``exc``: retry it after a backoff that doubles
        per attempt, or finish it (unknown outcome, not retriable, ``max_attempts`` reached).

        ``counted``: the attempt is already in ``job.attempts`` and in the outbox row (it
        reached the SMTP transaction). An attempt that failed before (cannot connect, login
        refused) is counted here, in memory and in the same write that requeues or fails
        the row, so the backoff grows and ``max_attempts`` ends it across restarts too.
        """
        if isinstance(exc, DeliveryError) and exc.outcome == DeliveryOutcome.UNKNOWN:
            text = exc.message if exc.says_not_retried else \
                f"{exc.message}: outcome unknown, not retried (the server may have the mail)"
            return await self._finish(job, error=DeliveryError(
                text,
                code=exc.code, outcome=DeliveryOutcome.UNKNOWN, says_not_retried=True,
                hint=f"check the recipient's mailbox for Message-ID {job.identity.message_id}"),
                attempt=not counted)
        if not counted:
            job.attempts += 1
        job.last_error = str(exc)
        if not exc.retriable:
            return await self._finish(job, error=exc, attempt=not counted)
        if job.attempts >= self.s.max_attempts:
            return await self._finish(job, error=DeliveryError(
                f"gave up after {job.attempts} attempt(s): {exc.message}", retriable=True,
                code=getattr(exc, "code", None), hint="the server may accept it later"),
                attempt=not counted)
        delay = backoff(job.attempts, first=self.s.min_backoff, cap=self.s.max_backoff)
        # a warning, so a user waiting on `postline send` sees why it takes long
        log.warning("mail %s: attempt %d failed (%s), retrying in %.1fs",
                    job.identity.message_id, job.attempts, exc, delay)
        if job.entry_id is None:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(delay, self._requeue, job)
            self._retry_handles.add(handle)
        else:
            await asyncio.to_thread(self.outbox.mark, job.entry_id, OutboxState.QUEUED, reason=str(exc),
                                    next_attempt_at=self._clock() + delay,
                                    attempt=not counted)
            self._inflight_ids.discard(job.entry_id)
            self._wake.set()

    def _requeue(self, job: Job) -> None:
        self._retry_handles = {h for h in self._retry_handles if not h.cancelled()
                               and h.when() > asyncio.get_running_loop().time()}
        self._ready.put_nowait(job)

    async def _finish(self, job: Job, *, result: SendResult | None = None,
                      error: PostlineError | None = None, attempt: bool = False) -> None:
        """Complete ``job``: its outbox row becomes sent / failed / unknown (``attempt``:
        also count an attempt the row does not hold yet), its caller gets the outcome."""
        if job.entry_id is not None:
            if result is not None:
                state, reason = OutboxState.SENT, ""
            else:
                unknown = getattr(error, "outcome", "") == DeliveryOutcome.UNKNOWN
                state = OutboxState.UNKNOWN if unknown else OutboxState.FAILED
                reason = str(error)
            await asyncio.to_thread(
                self.outbox.mark, job.entry_id, state, reason=reason,
                result=result_to_json(result) if result is not None else None, attempt=attempt)
            self._inflight_ids.discard(job.entry_id)
            self._wake.set()
            if error is not None:
                log.warning("queued mail %d (%s) %s: %s", job.entry_id,
                            job.identity.message_id, state, error)
        if job.future is not None and not job.future.done():
            if result is not None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    # -- the sender ------------------------------------------------------------------------

    async def _get_sender(self) -> MailSender:
        if self._sender is not None:
            return self._sender
        async with self._sender_lock:
            if self._sender is None:
                sender = self._open_sender()
                try:
                    await sender.connect()
                except BaseException:
                    await sender.close()  # e.g. the Graph sender's HTTP pool is already open
                    raise
                self.smtputf8 = sender.supports_smtputf8
                self.max_message_size = sender.max_message_size
                self._sender = sender
                self._add_workers(getattr(sender, "sends_per_session", 1))
        return self._sender

    def _add_workers(self, per_session: int) -> None:
        """Up to ``per_session`` workers per connection: a sender that pipelines the next
        mail behind the current one (SMTP) needs it waiting there, while max_connections
        still bounds its sessions."""
        want = self.s.max_connections * max(1, per_session)
        while self._workers < want and not self._stopping:
            self._workers += 1
            self._tasks.append(asyncio.create_task(self._worker(),
                                                   name=f"send-worker-{self._workers}"))

    async def _close_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            await sender.close()

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(min(self.s.idle_timeout, 5.0))
            if (self._sender is not None and self._busy == 0 and self._ready.empty()
                    and time.monotonic() - self._last_activity >= self.s.idle_timeout):
                log.debug("closing idle SMTP sessions of %s", self.s.service)
                await self._close_sender()

    # -- the outbox ------------------------------------------------------------------------

    async def _take_outbox(self) -> None:
        if self.owner or not self.lock.try_acquire():
            return
        self.owner = True
        n = await asyncio.to_thread(self.outbox.recover, self.s.service)
        if n:
            log.warning("%d mail(s) of %s were being sent when postline stopped; marked "
                        "unknown (see postline outbox list --state unknown)", n, self.s.service)

    async def _feeder(self) -> None:
        """Owner of the delivery lock: move due outbox rows into the ready queue."""
        while not self._stopping:
            self._wake.clear()
            await self._take_outbox()
            timeout = self.s.poll_interval
            room = 2 * self.s.max_connections - len(self._inflight_ids)
            if self.owner and room > 0:
                entries = await asyncio.to_thread(
                    self.outbox.due, self.s.service, limit=room, exclude=self._inflight_ids)
                for e in entries:
                    self._inflight_ids.add(e.id)
                    self._ready.put_nowait(Job(
                        message=message_from_json(e.message), entry_id=e.id,
                        identity=Identity(message_id=e.message_id, date=e.date),
                        attempts=e.attempts))
                if len(entries) < room:
                    # nothing more due now: sleep until the earliest backoff ends
                    next_at = await asyncio.to_thread(self.outbox.next_due_at, self.s.service)
                    if next_at is not None and next_at > self._clock():
                        timeout = min(timeout, next_at - self._clock())
            # a finished or newly queued mail sets _wake; otherwise poll for other processes
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
            # arrives together with the wake-up, and stop() would wait for ever
            try:
                async with asyncio.timeout(max(timeout, 0.01)):
                    await self._wake.wait()
            except TimeoutError:
                pass
