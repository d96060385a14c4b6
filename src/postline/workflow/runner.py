"""The runner of one workflow: polling rounds over its source, in one thread.

Order of commit for each batch of mails (this order is the crash-safety argument)::

    ledger: acquired (attempts + 1)      durable   (fetching may run ahead: it is read-only)
    parse -> processor -> every sink.write
    stored attachments and every sink's writes synced       durable (fdatasync, fsync)
    ledger: done / failed / ignored       durable
    server: move / delete                 then ledger: settled

The two durable steps of a batch run in the commit helper (workflow/commit.py) while the
next batch is processed; the runner waits for them before it reports and moves the batch.

A crash before the ledger's final state repeats the mail on restart; the directory and
JSONL sinks skip keys they already hold, so the mail reaches them once. A crash after it
finds the mail ``done`` but not ``settled``: it is moved, not processed again.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from postline.chunks import chunks
from postline.errors import ConfigError, ConnectError, StorageError, storage_error
from postline.files import make_dirs
from postline.limiter import WINDOWS, SlidingWindow
from postline.protocols.base import MailboxReader, MessageRef, RawMessage
from postline.source.record import ledger_key
from postline.source.schedule import Clock, FailureBackoff, PollSchedule
from postline.state.ledger import Ledger, LedgerState, Place, SqliteLedger
from postline.workflow.batch import INLINE_LIMIT, FetchStream, process_mails, split_batches
from postline.workflow.commit import Committer, InlineCommitter, Job, Pending, open_committer
from postline.workflow.events import Events, MailEvent
from postline.workflow.listing import list_folder, remember
from postline.workflow.mailjob import JobResult, MailSettings
from postline.workflow.sinks import Sink, Staged

log = logging.getLogger("postline.workflow")
LOOKUP_SLICE = 10_000   # listed mails looked up in the ledger at a time
mail_log = logging.getLogger("postline.mail")

class WorkflowRunner:
    """Runs one workflow. ``reader_factory`` gives a new, unconnected MailboxReader."""

    def __init__(self, *, name: str, source, settings: MailSettings, ledger: Ledger,
                 reader_factory: Callable[[], MailboxReader], protocol: str,
                 stop: threading.Event, clock: Clock | None = None,
                 events: Events | None = None,
                 committer_factory: Callable[[Ledger], Committer] | None = None) -> None:
        """``committer_factory`` makes the batch committer (default: the commit helper
        process for a SQLite ledger, see workflow/commit.py)."""
        self.name = name
        self.committer_factory = committer_factory or _default_committer
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
        self.throttle = SlidingWindow(limit=source.throttle.max_streams,
                                      window=WINDOWS[source.throttle.per],
                                      clock=self.clock.monotonic)
        b = source.backoff
        self.backoff = FailureBackoff(min=b.min, max=b.max,
                                      reset_after_streams=b.reset_after_streams,
                                      reset_after_seconds=b.reset_after_seconds,
                                      clock=self.clock)
        self.spool_dir = settings.work_dir / "spool"
        self._committer: Committer = InlineCommitter(ledger)   # replaced by run()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        """Poll until ``stop`` is set (or one round with ``once``). Raises fatal errors
        (ConfigError, AuthError, TLSError); ConnectError and StorageError (disk full) are
        retried with backoff unless ``once``."""
        opened = []  # only these are closed: a sink that failed to open holds nothing
        self._committer = self.committer_factory(self.ledger)
        try:
            for sink in self.s.sinks:
                sink.open()
                opened.append(sink)
            self._loop(once)
        finally:
            self._committer.close()
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
                    self.events.connected(self.name)
                    while not self.stop.is_set():
                        started = self.clock.now()
                        more = self.round(reader)
                        self.events.round_done(self.name)
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
                self.events.disconnected(self.name, f"connection lost: {exc}", delay)
                self.clock.wait(delay, self.stop)
            except StorageError as exc:
                # disk full or not writable: nothing was settled; wait for the operator
                if once:
                    raise
                delay = reconnect.failure()
                log.warning("workflow %s: %s; trying again in %.0fs", self.name, exc, delay)
                self.events.disconnected(self.name, str(exc), delay)
                self.clock.wait(delay, self.stop)

    def _wait_for_next_round(self, reader: MailboxReader, folder: str, started: float) -> None:
        due = self.schedule.next_after(started)
        use_idle = (self.source.polling.push and self.protocol == "imap"
                    and reader.capabilities.idle)
        while not self.stop.is_set():
            self.events.alive(self.name)
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
        listing = list_folder(reader=reader, ledger=self.ledger, source=self.s.source,
                              folder=folder, folder_version=state.folder_version,
                              every=src.polling.full_scan, now=self.clock.now(),
                              key_of=self._key)
        more = self._work(reader, listing.refs)
        if not more:  # everything listed is in the ledger: the cursor may move on
            remember(self.ledger, source=self.s.source, folder=folder,
                     folder_version=state.folder_version, listing=listing)
        return more

    def _work(self, reader: MailboxReader, refs: list[MessageRef]) -> bool:
        """Process what of ``refs`` the ledger does not know yet, and settle what it knows
        but has not moved. Returns True when mails were left for another round."""
        src = self.source
        settle: list[tuple[MessageRef, str, str]] = []
        todo: list[MessageRef] = []
        # in slices: a full listing of a big folder would otherwise hold every key and its
        # ledger state at once (~400 bytes a mail, beside the refs themselves)
        for part in chunks(refs, LOOKUP_SLICE):
            by_key = {self._key(r): r for r in part}
            known = self.ledger.states(self.s.source, list(by_key))
            for key, ref in by_key.items():
                state, settled = known.get(key, ("", False))
                if not state or state == LedgerState.ACQUIRED:
                    todo.append(ref)
                elif not settled:
                    settle.append((ref, key, state))
        if settle:
            self._settle(reader, settle)
        if not todo:
            return False
        self.events.backlog(self.name, len(todo))
        deadline = self.clock.monotonic() + src.polling.timeout
        if self.throttle.limited:
            return self._work_throttled(reader, todo, deadline)
        return self._work_streamed(reader, todo, deadline)

    def _work_streamed(self, reader: MailboxReader, todo: list[MessageRef],
                       deadline: float) -> bool:
        """The whole backlog in one pipelined fetch, batch by batch: the reader keeps
        requests in flight while each batch is processed, so server, network and parsing
        overlap in this one thread (see protocols/imap_bulk.py for why no thread), and
        each batch is committed by the commit helper while the next one is processed
        (workflow/commit.py). Batch k+2 is acquired in the commit of batch k."""
        batches = split_batches(todo, self.source.batch_size)
        stream = FetchStream(self._fetch(reader, todo))
        committer = self._committer
        in_flight: list[tuple] = []   # batches whose commit runs: (pending, results, staged)
        try:
            attempts = self.ledger.acquire(self.s.source, self._places(
                [r for b in batches[:2] for r in b]))
            more = False
            for k, batch in enumerate(batches):
                if self.stop.is_set() or self.clock.monotonic() > deadline:
                    more = True
                    break
                fetched = stream.take({self._key(r) for r in batch}, self._key)
                results = self._process_batch(batch, fetched, attempts)
                later = (batches[k + 2] if k + 2 < len(batches) and not self.stop.is_set()
                         and self.clock.monotonic() < deadline else [])
                job, staged = self._stage(results, later)
                in_flight.append((committer.submit(job), results, staged))
                if len(in_flight) == 2:
                    attempts.update(self._after_commit(reader, *in_flight.pop(0)))
            while in_flight:
                attempts.update(self._after_commit(reader, *in_flight.pop(0)))
            return more
        except BaseException:
            # (a failed _after_commit gave its own batch back already)
            for _, _, staged in in_flight:
                for sink, st in staged:
                    sink.unstage(st)
            committer.drain()
            raise
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
            # only mails handed to the sinks are new streams: ignored and duplicate mails
            # (and those a stop request left for later) give their slot back
            self.throttle.give_back(sum(res.label not in ("done", "failed")
                                        for _, res in results))
            job, staged = self._stage(results, [])
            self._after_commit(reader, self._committer.submit(job), results, staged)
        return False

    def _fetch(self, reader: MailboxReader, refs: list[MessageRef]) -> Iterator[RawMessage]:
        return reader.fetch(refs, spool_dir=self.spool_dir, inline_limit=INLINE_LIMIT,
                            batch_size=max(len(refs), 1))

    def _throttled(self, n: int) -> int:
        """How many mails may start now (waits for the window when none may)."""
        if not self.throttle.limited:
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
                self.ledger.reset(self.s.source, vanished, rescan=False)
            return [(raw.ref, res) for raw, res in process_mails(
                fetched, attempts, s=self.s, ledger=self.ledger, stop=self.stop,
                clock=self.clock, backoff=self.backoff, key_of=self._key)]
        finally:
            # the sinks have what they need of the raw mails (a directory sink's .eml is
            # written, and flushed with the batch)
            for raw in fetched:
                raw.discard()

    def _stage(self, results: list[tuple[MessageRef, JobResult]], nxt: list[MessageRef]
               ) -> tuple[Job, list[tuple[Sink, Staged]]]:
        """The commit of a processed batch: its stored attachments and every sink's writes
        handed to the OS, and what makes them durable; then its outcomes and the
        acquisition of ``nxt``. Raises StorageError (a full or read-only disk)."""
        job = Job(source=self.s.source)
        fence_check = getattr(self.ledger, "check_fence", None)
        if fence_check is not None:   # a fleet: a stale owner writes nothing into the sinks
            fence_check(self.s.source)
        for _, r in results:
            if r.label == "done" and r.files:
                job.files += [str(f) for f in r.files]
                # the new file entries, and the mail's new attachments directory
                job.dirs += [str(r.files[0].parent), str(r.files[0].parent.parent)]
        staged: list[tuple[Sink, Staged]] = []
        try:
            for sink in self.s.sinks:
                st = sink.stage()
                staged.append((sink, st))
                job.files += [str(f) for f in st.files]
                job.dirs += [str(d) for d in st.dirs]
        except OSError as exc:
            for sink, st in staged:
                sink.unstage(st)
            what = f"writing {sink.where}"
            raise (storage_error(exc, what=what)
                   or StorageError.from_os_error(exc, what=what)) from exc
        # Outcomes that need no server action are written settled right away: one durable
        # ledger commit per batch instead of two.
        job.outcomes = [r.outcome if r.outcome.settled or self._action(r.outcome.state)[0]
                        else replace(r.outcome, settled=True)
                        for _, r in results if r.label != "interrupted"]
        job.acquire = self._places(nxt)
        return job, staged

    def _after_commit(self, reader: MailboxReader, pending: Pending,
                      results: list[tuple[MessageRef, JobResult]],
                      staged: list[tuple[Sink, Staged]]) -> dict[str, int]:
        """Wait for the commit of ``results``; then tell the sinks, report the mails and
        move them. Returns the attempts of what the commit acquired; raises StorageError
        (nothing of the batch counts: its mails stay acquired and come again)."""
        try:
            acquired = self._committer.result(pending)
        except StorageError:
            for sink, st in staged:
                sink.unstage(st)
            raise
        for sink, st in staged:
            sink.committed(st)
        for _, res in results:
            self._report(res)
        # duplicates too: to the ignore folder (or POP3's ignore action), like an ignored
        # mail; one listed again after a UIDVALIDITY change is settled already (left alone)
        self._settle(reader, [(ref, res.outcome.key, res.outcome.state)
                              for ref, res in results
                              if res.label != "interrupted" and not res.outcome.settled
                              and self._action(res.outcome.state)[0]],
                     later=True)
        return acquired

    def _report(self, res: JobResult) -> None:
        o = res.outcome
        if mail_log.isEnabledFor(logging.INFO):
            reason = o.reason if o.reason and res.label != "done" else None
            mail_log.info("workflow=%s key=%s subject=%r outcome=%s ms=%.0f%s", self.name,
                          o.key, res.subject[:120], res.label, res.ms,
                          # quotes escaped, backslashes kept: a regex reads as written
                          f' reason="{_one_line(reason)}"' if reason else "",
                          extra={"fields": {"workflow": self.name, "key": o.key,
                                            "subject": res.subject, "outcome": res.label,
                                            "ms": round(res.ms, 1), "reason": reason}})
        self.events.mail(MailEvent(workflow=self.name, key=o.key, subject=res.subject,
                                   label=res.label, reason=o.reason, ms=res.ms))

    # -- server-side actions ----------------------------------------------------------------

    def _settle(self, reader: MailboxReader, items: list[tuple[MessageRef, str, str]], *,
                later: bool = False) -> None:
        """Move (IMAP) or delete/keep (POP3) mails whose ledger state is final; with
        ``later`` the ledger learns it through the commit helper, after the commits
        before (a lost mark only means the move is tried again next round, where the mail
        is no longer listed)."""
        groups: dict[tuple[str, str], list[tuple[MessageRef, str]]] = {}
        for ref, key, state in items:
            if state == LedgerState.ACQUIRED:
                continue
            groups.setdefault(self._action(state), []).append((ref, key))
        # a fleet's ledger (PostgreSQL) checks the lease's fencing token right before a
        # move: an owner frozen past its lease must not move what another now owns
        fence_check = getattr(self.ledger, "check_fence", None)
        for (action, target), group in groups.items():
            refs = [r for r, _ in group]
            if action and fence_check is not None:
                fence_check(self.s.source)
            if action == "move":
                reader.move(refs, target)
            elif action == "delete":
                reader.delete(refs)
            keys = [k for _, k in group]
            if later:
                self._committer.submit(Job(source=self.s.source, settled=keys))
            else:
                self.ledger.mark_settled(self.s.source, keys)

    def _action(self, state: str) -> tuple[str, str]:
        return server_action(self.source, self.protocol, state)

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


def server_action(source, protocol: str, state: str) -> tuple[str, str]:
    """What the server does with a mail of ``source`` in final ``state``: ("move", folder),
    ("delete", "") or ("", "") for nothing (the mail stays where the source reads it)."""
    kind = {LedgerState.DONE: "done", LedgerState.FAILED: "error",
            LedgerState.IGNORED: "ignore"}[state]
    if protocol == "pop3":
        return ("delete", "") if getattr(source.pop3, kind) == "delete" else ("", "")
    target = getattr(source.folders, kind)
    return ("move", target) if target and target != source.folders.input else ("", "")


def _default_committer(ledger: Ledger) -> Committer:
    return open_committer(ledger, ledger_path=ledger.path
                          if isinstance(ledger, SqliteLedger) else None)


def clean_work_dir(path: Path) -> None:
    """Remove leftovers of an earlier run (parse scratch files, spooled mails)."""
    shutil.rmtree(path, ignore_errors=True)
    make_dirs(path)   # 0700: parts of mails wait here


def _one_line(text: str) -> str:
    """``text`` for a double-quoted log field: quotes and line breaks escaped, nothing else."""
    return text.replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
