"""The runner of one workflow: polling rounds over its source, in one thread.

Order of commit for each batch of mails (this order is the crash-safety argument)::

    ledger: acquired (attempts + 1)      durable   (fetching may run ahead: it is read-only)
    parse -> processor -> every sink.write
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from postline.errors import ConfigError, ConnectError, StorageError, storage_error
from postline.protocols.base import MailboxReader, MessageRef, RawMessage
from postline.source.attachments import make_durable
from postline.source.ledger import Ledger, Outcome, Place
from postline.source.record import ledger_key
from postline.source.schedule import Clock, FailureBackoff, PollSchedule, Throttle
from postline.workflow.mailjob import (DoneMail, JobResult, MailSettings, Prepared,
                                       deliver, discard, prepare)

log = logging.getLogger("postline.workflow")
mail_log = logging.getLogger("postline.mail")

MAX_ATTEMPTS = 10          # a mail taken this often without an outcome is a poison mail
INLINE_LIMIT = 2 * 1024 * 1024
# A batch's mails are held (or spooled) until it is committed: this bounds the memory of
# a batch of big mails whatever batch_size says.
BATCH_MAX_BYTES = 32 * 1024 * 1024


def split_batches(refs: list[MessageRef], size: int, *, max_bytes: int = BATCH_MAX_BYTES
                  ) -> list[list[MessageRef]]:
    """``refs`` in batches of ``size`` mails, each ending early at ``max_bytes`` of mail
    (by the sizes the listing gave; a mail of unknown size counts as 64 KB)."""
    batches: list[list[MessageRef]] = []
    cur: list[MessageRef] = []
    octets = 0
    for ref in refs:
        weight = min(ref.size if ref.size is not None else 65536, INLINE_LIMIT)
        if cur and (len(cur) >= size or octets + weight > max_bytes):
            batches.append(cur)
            cur, octets = [], 0
        cur.append(ref)
        octets += weight
    if cur:
        batches.append(cur)
    return batches


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
        (ConfigError, AuthError, TLSError); ConnectError and StorageError (disk full) are
        retried with backoff unless ``once``."""
        opened = []  # only these are closed: a sink that failed to open holds nothing
        try:
            for sink in self.s.sinks:
                sink.open()
                opened.append(sink)
            self._loop(once)
        finally:
            for sink in opened:
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
            except StorageError as exc:
                # disk full or not writable: nothing was settled; wait for the operator
                if once:
                    raise
                delay = reconnect.failure()
                log.warning("workflow %s: %s; trying again in %.0fs", self.name, exc, delay)
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
        if not todo:
            return False
        self.events.backlog(self.name, len(todo))
        deadline = self.clock.monotonic() + src.polling.timeout
        if self.throttle.max:
            return self._work_throttled(reader, todo, deadline)
        return self._work_streamed(reader, todo, deadline)

    def _work_streamed(self, reader: MailboxReader, todo: list[MessageRef],
                       deadline: float) -> bool:
        """The whole backlog in one pipelined fetch, batch by batch: the reader keeps
        requests in flight while each batch is processed, so server, network and parsing
        overlap in this one thread (see protocols/imap_bulk.py for why no thread). The
        next batch is acquired in the commit that finishes this one (one durable ledger
        commit per batch)."""
        batches = split_batches(todo, self.source.batch_size)
        stream = _Stream(self._fetch(reader, todo))
        try:
            attempts = self.ledger.acquire(self.s.source, self._places(batches[0]))
            for k, batch in enumerate(batches):
                if self.stop.is_set() or self.clock.monotonic() > deadline:
                    return True
                fetched = stream.take({self._key(r) for r in batch}, self._key)
                results = self._process_batch(batch, fetched, attempts)
                nxt = (batches[k + 1] if k + 1 < len(batches) and not self.stop.is_set()
                       and self.clock.monotonic() < deadline else [])
                attempts = self._commit(results, nxt)
                self._after_commit(reader, results)
            return False
        finally:
            stream.close()

    def _work_throttled(self, reader: MailboxReader, todo: list[MessageRef],
                        deadline: float) -> bool:
        """Batches as the throttle allows, each fetched, acquired and committed on its
        own."""
        i = 0
        while i < len(todo):
            if self.stop.is_set() or self.clock.monotonic() > deadline:
                return True
            n = self._throttled(self.source.batch_size)
            if n == 0:
                return True
            batch = todo[i:i + n]
            i += n
            attempts = self.ledger.acquire(self.s.source, self._places(batch))
            results = self._process_batch(batch, list(self._fetch(reader, batch)), attempts)
            self._commit(results, [])
            self._after_commit(reader, results)
        return False

    def _fetch(self, reader: MailboxReader, refs: list[MessageRef]) -> Iterator[RawMessage]:
        return reader.fetch(refs, spool_dir=self.spool_dir, inline_limit=INLINE_LIMIT,
                            batch_size=max(len(refs), 1))

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

    def _places(self, refs: list[MessageRef]) -> list[Place]:
        return [Place(key=self._key(r), connection=self.s.connection, folder=r.folder,
                      folder_version=r.folder_version, server_id=r.id) for r in refs]

    def _process_batch(self, batch: list[MessageRef], fetched: list[RawMessage],
                       attempts: dict[str, int]) -> list[tuple[MessageRef, JobResult]]:
        """Process ``fetched``, the mails of ``batch`` (already acquired, with ``attempts``)
        still on the server: every sink written, nothing committed yet."""
        places = self._places(batch)
        try:
            got = {self._key(raw.ref) for raw in fetched}
            vanished = [p.key for p in places if p.key not in got]
            if vanished:  # moved or deleted by someone else meanwhile: forget them
                self.ledger.reset(self.s.source, vanished)
            return [(raw.ref, res) for raw, res in self._process_all(fetched, attempts)]
        finally:
            # the sinks have what they need of the raw mails (a directory sink's .eml is
            # written, and flushed with the batch)
            for raw in fetched:
                raw.discard()

    def _commit(self, results: list[tuple[MessageRef, JobResult]],
                nxt: list[MessageRef]) -> dict[str, int]:
        """Every sink flushed (durable), then the outcomes and the acquisition of ``nxt``
        in one durable ledger transaction. Returns the attempts of ``nxt``; raises
        StorageError (a full or read-only disk: nothing of the batch counts)."""
        files = [f for _, r in results if r.label == "done" for f in r.files]
        if files:
            try:
                make_durable(files)   # a record never names an attachment a power cut lost
            except OSError as exc:
                what = f"storing attachments in {files[0].parent.parent}"
                raise (storage_error(exc, what=what)
                       or StorageError.from_os_error(exc, what=what)) from exc
        for sink in self.s.sinks:
            try:
                sink.flush()
            except OSError as exc:
                what = f"writing {sink.where}"
                raise (storage_error(exc, what=what)
                       or StorageError.from_os_error(exc, what=what)) from exc
        # Outcomes that need no server action are written settled right away: one durable
        # ledger commit per batch instead of two.
        outcomes = [r.outcome if r.outcome.settled or self._action(r.outcome.state)[0]
                    else replace(r.outcome, settled=True)
                    for _, r in results if r.label != "interrupted"]
        if nxt:
            return self.ledger.finish_and_acquire(self.s.source, outcomes, self._places(nxt))
        self.ledger.finish(self.s.source, outcomes)
        return {}

    def _after_commit(self, reader: MailboxReader,
                      results: list[tuple[MessageRef, JobResult]]) -> None:
        """Report the committed ``results`` and move their mails."""
        for _, res in results:
            self._report(res)
        self._settle(reader, [(ref, res.outcome.key, res.outcome.state)
                              for ref, res in results
                              if res.label not in ("interrupted", "duplicate")
                              and self._action(res.outcome.state)[0]])

    def _process_all(self, fetched: list[RawMessage], attempts: dict[str, int]
                     ) -> list[tuple[RawMessage, JobResult]]:
        """Prepare every mail of the batch, look up their duplicates in one ledger query,
        then deliver them one by one (stops early on a stop request: the rest stays
        acquired and is taken up by the next run)."""
        s = self.s
        preps: list[tuple[RawMessage, Prepared | JobResult]] = []
        for raw in fetched:
            if self.stop.is_set():
                break
            key = self._key(raw.ref)
            if attempts.get(key, 1) > MAX_ATTEMPTS:
                preps.append((raw, _poison(key, attempts[key])))
            else:
                preps.append((raw, prepare(raw, s=s)))
        found = self.ledger.find_done_many(
            s.source, [p.identity for _, p in preps if isinstance(p, Prepared)])
        done: dict[str, DoneMail] = {
            identity: DoneMail(key=e.key, folder_version=e.folder_version,
                               content_hash=e.content_hash) for identity, e in found.items()}
        results: list[tuple[RawMessage, JobResult]] = []
        n = 0
        try:
            for n, (raw, prep) in enumerate(preps):
                if isinstance(prep, JobResult):
                    res = prep
                elif self.stop.is_set():
                    break
                else:
                    res = deliver(prep, s=s, done=done.get(prep.identity), stop=self.stop,
                                  clock=self.clock)
                    if res.label == "done":
                        # a second copy later in this batch is a duplicate of this one
                        done.setdefault(prep.identity, DoneMail(
                            key=prep.key, folder_version=prep.place.folder_version,
                            content_hash=prep.digest))
                results.append((raw, res))
                if res.label == "failed":
                    # pause after a failure: min, doubling per failure in a row, up to max
                    self.clock.wait(self.backoff.failure(), self.stop)
                elif res.label == "done":
                    self.backoff.success()
            else:
                n = len(preps)
        finally:
            # mails not delivered (a stop request, a full disk): their part files go
            for _, rest in preps[n:]:
                if isinstance(rest, Prepared):
                    discard(rest)
        return results

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
        groups: dict[tuple[str, str], list[tuple[MessageRef, str]]] = {}
        for ref, key, state in items:
            if state == "acquired":
                continue
            groups.setdefault(self._action(state), []).append((ref, key))
        for (action, target), group in groups.items():
            refs = [r for r, _ in group]
            if action == "move":
                reader.move(refs, target)
            elif action == "delete":
                reader.delete(refs)
            self.ledger.mark_settled(self.s.source, [k for _, k in group])

    def _action(self, state: str) -> tuple[str, str]:
        """What the server does with a mail in final ``state``: ("move", folder),
        ("delete", "") or ("", "") for nothing."""
        src = self.source
        kind = {"done": "done", "failed": "error", "ignored": "ignore"}[state]
        if self.protocol == "pop3":
            return ("delete", "") if getattr(src.pop3, kind) == "delete" else ("", "")
        target = getattr(src.folders, kind)
        return ("move", target) if target and target != src.folders.input else ("", "")

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


class _Stream:
    """The messages of one fetch iterator, taken batch by batch (it yields in the order it
    was asked for, skipping vanished messages)."""

    def __init__(self, it: Iterator[RawMessage]) -> None:
        self._it = it
        self._next: RawMessage | None = None
        self._done = False

    def take(self, keys: set[str], key_of: Callable[[MessageRef], str]) -> list[RawMessage]:
        """The next messages whose keys are in ``keys``; stops at the first that is not."""
        out: list[RawMessage] = []
        while True:
            if self._next is None:
                if self._done:
                    return out
                self._next = next(self._it, None)
                if self._next is None:
                    self._done = True
                    return out
            if key_of(self._next.ref) not in keys:
                return out
            out.append(self._next)
            self._next = None

    def close(self) -> None:
        """Drop what was fetched but not taken; stops the fetch (it drains the server's
        answers in flight)."""
        if self._next is not None:
            self._next.discard()
            self._next = None
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def _poison(key: str, attempts: int) -> JobResult:

    reason = (f"gave up after {attempts} attempts: the run stopped while handling this "
              "mail each time")
    return JobResult(outcome=Outcome(key=key, state="failed", reason=reason), label="failed",
                     subject="", ms=0.0)


def clean_work_dir(path: Path) -> None:
    """Remove leftovers of an earlier run (parse scratch files, spooled mails)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)

