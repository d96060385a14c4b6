"""The runner of one workflow: polling rounds over its source, in one thread.

Order of commit for each batch of mails (this order is the crash-safety argument)::

    ledger: acquired (attempts + 1)      durable
    fetch -> parse -> processor -> every sink.write
    every sink.flush                      durable (fsync)
    ledger: done / failed / ignored       durable
    server: move / delete                 then ledger: settled

A crash before the ledger's final state repeats the mail on restart; the directory and
JSONL sinks skip keys they already hold, so the mail reaches them once. A crash after it
finds the mail ``done`` but not ``settled``: it is moved, not processed again.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from postline.errors import ConfigError, ConnectError
from postline.protocols.base import MailboxReader, MessageRef, RawMessage
from postline.source.ledger import Ledger, Place
from postline.source.record import ledger_key
from postline.source.schedule import Clock, FailureBackoff, PollSchedule, Throttle
from postline.workflow.mailjob import JobResult, MailSettings, process

log = logging.getLogger("postline.workflow")
mail_log = logging.getLogger("postline.mail")

MAX_ATTEMPTS = 10          # a mail taken this often without an outcome is a poison mail
INLINE_LIMIT = 2 * 1024 * 1024


@dataclass(frozen=True)
class MailEvent:
    workflow: str
    key: str
    subject: str
    label: str             # done | failed | ignored | duplicate | moved
    reason: str | None
    ms: float


class Events:
    """Callbacks the CLI uses for progress bars and summaries (defaults: do nothing)."""

    def backlog(self, workflow: str, count: int) -> None: ...

    def mail(self, event: MailEvent) -> None: ...


class WorkflowRunner:
    """Runs one workflow. ``reader_factory`` gives a new, unconnected MailboxReader."""

    def __init__(self, *, name: str, source, settings: MailSettings, ledger: Ledger,
                 reader_factory: Callable[[], MailboxReader], protocol: str,
                 stop: threading.Event, clock: Clock | None = None,
                 events: Events | None = None) -> None:
        self.name = name
        self.source = source
        self.s = settings
        self.ledger = ledger
        self.reader_factory = reader_factory
        self.protocol = protocol
        self.stop = stop
        self.clock = clock or Clock()
        self.events = events or Events()
        self.schedule = PollSchedule(interval=source.polling.interval,
                                     cron=source.polling.cron, clock=self.clock)
        self.throttle = Throttle(max_streams=source.throttle.max_streams,
                                 per=source.throttle.per, clock=self.clock)
        b = source.backoff
        self.backoff = FailureBackoff(min=b.min, max=b.max,
                                      reset_after_streams=b.reset_after_streams,
                                      reset_after_seconds=b.reset_after_seconds,
                                      clock=self.clock)
        self.spool_dir = settings.work_dir / "spool"

    # -- the loop ---------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        """Poll until ``stop`` is set (or one round with ``once``). Raises fatal errors
        (ConfigError, AuthError, TLSError); ConnectError is retried with backoff unless
        ``once``."""
        for sink in self.s.sinks:
            sink.open()
        try:
            self._loop(once)
        finally:
            for sink in self.s.sinks:
                sink.close()

    def _loop(self, once: bool) -> None:
        reconnect = FailureBackoff(min=1.0, max=60.0, reset_after_streams=1,
                                   reset_after_seconds=None, clock=self.clock)
        folder = self.source.folders.input
        while not self.stop.is_set():
            try:
                with self.reader_factory() as reader:
                    reconnect.reset()
                    while not self.stop.is_set():
                        started = self.clock.now()
                        more = self.round(reader)
                        if once:
                            return
                        if more:
                            continue
                        self._wait_for_next_round(reader, folder, started)
            except ConnectError as exc:
                if once or not exc.retriable:
                    raise
                delay = reconnect.failure()
                log.warning("workflow %s: connection lost (%s); reconnecting in %.0fs",
                            self.name, exc, delay)
                self.clock.wait(delay, self.stop)

    def _wait_for_next_round(self, reader: MailboxReader, folder: str, started: float) -> None:
        due = self.schedule.next_after(started)
        use_idle = (self.source.polling.idle and self.protocol == "imap"
                    and reader.capabilities.idle)
        while not self.stop.is_set():
            left = due - self.clock.now()
            if left <= 0:
                return
            if use_idle:
                # short IDLE slices so that a stop request is noticed within two seconds
                if reader.wait_for_changes(folder, min(2.0, left)):
                    return
            else:
                self.clock.wait(min(left, 2.0), self.stop)

    # -- one round --------------------------------------------------------------------------

    def round(self, reader: MailboxReader) -> bool:
        """One polling round. Returns True when mails were left for another round (timeout
        or throttle), False when the folder was worked through."""
        src = self.source
        folder = src.folders.input
        state = reader.open_folder(folder)
        self._check_folder_version(folder, state.folder_version)
        refs, _ = reader.list_messages(folder)
        by_key = {self._key(r): r for r in refs}
        known = self.ledger.get_many(self.s.source, list(by_key))
        settle: list[tuple[MessageRef, str, str]] = []
        todo: list[MessageRef] = []
        for key, ref in by_key.items():
            entry = known.get(key)
            if entry is None or entry.state == "acquired":
                todo.append(ref)
            elif not entry.settled:
                settle.append((ref, key, entry.state))
        if settle:
            self._settle(reader, settle)
        if todo:
            self.events.backlog(self.name, len(todo))
        deadline = self.clock.monotonic() + src.polling.timeout
        prefetch = _Prefetch(lambda batch: self._fetch(reader, batch))
        try:
            i = 0
            while i < len(todo):
                if self.stop.is_set() or self.clock.monotonic() > deadline:
                    return True
                n = self._throttled(src.batch_size)
                if n == 0:
                    return True
                batch = todo[i:i + n]
                i += n
                # Without throttle or pause, the next batch is fetched while this one is
                # processed (network and server time overlap with parsing).
                nxt = todo[i:i + n] if not self.throttle.max else []
                self._batch(reader, batch, prefetch.take(batch), prefetch, nxt)
            return False
        finally:
            prefetch.close()

    def _fetch(self, reader: MailboxReader, batch: list[MessageRef]) -> list[RawMessage]:
        return list(reader.fetch(batch, spool_dir=self.spool_dir, inline_limit=INLINE_LIMIT,
                                 batch_size=len(batch)))

    def _throttled(self, n: int) -> int:
        """How many mails may start now (waits for the window when none may)."""
        if not self.throttle.max:
            return n
        while True:
            delay = self.throttle.delay()
            if delay <= 0:
                break
            if self.clock.wait(delay, self.stop):
                return 0
        allowed = 0
        while allowed < n and self.throttle.delay() <= 0:
            self.throttle.record()
            allowed += 1
        return allowed

    def _batch(self, reader: MailboxReader, batch: list[MessageRef],
               fetched: list[RawMessage] | None, prefetch: "_Prefetch",
               nxt: list[MessageRef]) -> None:
        places = [Place(key=self._key(r), connection=self.s.connection, folder=r.folder,
                        folder_version=r.folder_version, server_id=r.id) for r in batch]
        attempts = self.ledger.acquire(self.s.source, places)
        try:
            if fetched is None:
                fetched = self._fetch(reader, batch)
            if nxt:
                prefetch.start(nxt)
            got = {self._key(raw.ref) for raw in fetched}
            vanished = [p.key for p in places if p.key not in got]
            if vanished:  # moved or deleted by someone else meanwhile: forget them
                self.ledger.reset(self.s.source, vanished)
            results: list[tuple[RawMessage, JobResult]] = []
            for raw in fetched:
                if self.stop.is_set():
                    break   # the rest stays acquired and is taken up by the next run
                key = self._key(raw.ref)
                if attempts.get(key, 1) > MAX_ATTEMPTS:
                    res = _poison(key, attempts[key])
                else:
                    res = process(raw, s=self.s, ledger=self.ledger, stop=self.stop,
                                  clock=self.clock)
                results.append((raw, res))
                if res.label == "failed":
                    # pause after a failure: min, doubling per failure in a row, up to max
                    self.clock.wait(self.backoff.failure(), self.stop)
                elif res.label == "done":
                    self.backoff.success()
            for sink in self.s.sinks:
                sink.flush()
            final = [res for _, res in results if res.label != "interrupted"]
            self.ledger.finish(self.s.source, [r.outcome for r in final])
            for raw, res in results:
                self._report(res)
            prefetch.wait()  # the connection is free again
            self._settle(reader, [(raw.ref, res.outcome.key, res.outcome.state)
                                  for raw, res in results
                                  if res.label not in ("interrupted", "duplicate")])
        finally:
            for raw in fetched or ():
                raw.discard()

    def _report(self, res: JobResult) -> None:
        o = res.outcome
        mail_log.info("workflow=%s key=%s subject=%r outcome=%s ms=%.0f%s", self.name, o.key,
                      res.subject[:120], res.label, res.ms,
                      f" reason={o.reason!r}" if o.reason and res.label != "done" else "")
        self.events.mail(MailEvent(workflow=self.name, key=o.key, subject=res.subject,
                                   label=res.label, reason=o.reason, ms=res.ms))

    # -- server-side actions ----------------------------------------------------------------

    def _settle(self, reader: MailboxReader, items: list[tuple[MessageRef, str, str]]) -> None:
        """Move (IMAP) or delete/keep (POP3) mails whose ledger state is final."""
        src = self.source
        groups: dict[tuple[str, str], list[tuple[MessageRef, str]]] = {}
        for ref, key, state in items:
            if state == "acquired":
                continue
            kind = {"done": "done", "failed": "error", "ignored": "ignore"}[state]
            if self.protocol == "pop3":
                action = ("delete", "") if getattr(src.pop3, kind) == "delete" else ("", "")
            else:
                target = getattr(src.folders, kind)
                action = ("move", target) if target and target != src.folders.input else ("", "")
            groups.setdefault(action, []).append((ref, key))
        for (action, target), group in groups.items():
            refs = [r for r, _ in group]
            if action == "move":
                reader.move(refs, target)
            elif action == "delete":
                reader.delete(refs)
            self.ledger.mark_settled(self.s.source, [k for _, k in group])

    def _check_folder_version(self, folder: str, version: str) -> None:
        before = self.ledger.folder_version(self.s.source, folder)
        if before == version:
            return
        if before is not None:
            log.warning("workflow %s: UIDVALIDITY of folder %r changed from %s to %s; "
                        "policy %s", self.name, folder, before, version,
                        self.source.uidvalidity_change)
            if self.source.uidvalidity_change == "stop":
                raise ConfigError(
                    f"source {self.s.source}: UIDVALIDITY of folder {folder!r} changed from "
                    f"{before} to {version}, and uidvalidity_change is stop",
                    hint="check the mailbox, then set uidvalidity_change: reread (mails "
                         "already done are skipped by Message-ID) or reset the ledger")
        self.ledger.set_folder_version(self.s.source, folder, version)

    def _key(self, ref: MessageRef) -> str:
        return ledger_key(self.s.connection, ref.folder, ref.folder_version, ref.id)


class _Prefetch:
    """Fetches one batch ahead on a worker thread. The reader is never used by two threads
    at once: the caller uses it only after :meth:`wait` or :meth:`take`."""

    def __init__(self, fetch: Callable[[list[MessageRef]], list[RawMessage]]) -> None:
        self._fetch = fetch
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._ids: list[str] = []

    def start(self, batch: list[MessageRef]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._ids = [r.id for r in batch]
        self._future = self._pool.submit(self._fetch, batch)

    def wait(self) -> None:
        if self._future is not None:
            wait([self._future])

    def take(self, batch: list[MessageRef]) -> list[RawMessage] | None:
        """The prefetched mails if they are ``batch``'s; raises what the fetch raised."""
        if self._future is None:
            return None
        future, self._future = self._future, None
        got = future.result()
        if self._ids == [r.id for r in batch]:
            return got
        for raw in got:
            raw.discard()
        return None

    def close(self) -> None:
        if self._future is not None:
            try:
                for raw in self._future.result():
                    raw.discard()
            except Exception:  # noqa: BLE001 - the round is over anyway
                pass
            self._future = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _poison(key: str, attempts: int) -> JobResult:
    from postline.source.ledger import Outcome

    reason = (f"gave up after {attempts} attempts: the run stopped while handling this "
              "mail each time")
    return JobResult(outcome=Outcome(key=key, state="failed", reason=reason), label="failed",
                     subject="", ms=0.0)


def clean_work_dir(path: Path) -> None:
    """Remove leftovers of an earlier run (parse scratch files, spooled mails)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)

