"""One batch of mails: how a backlog is cut into batches, how a batch's mails are taken
from the fetch in order, and how each is prepared, checked for duplicates and delivered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from postline.protocols.base import MessageRef, RawMessage
from postline.source.schedule import Clock, FailureBackoff
from postline.state.ledger import Ledger, Outcome
from postline.workflow.mailjob import (
    DoneMail,
    JobResult,
    MailSettings,
    Prepared,
    deliver,
    discard,
    prepare,
)

MAX_ATTEMPTS = 10          # a mail taken this often without an outcome is a poison mail
INLINE_LIMIT = 2 * 1024 * 1024   # larger mails are spooled to a file by the reader
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


class FetchStream:
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


def poison_result(key: str, attempts: int) -> JobResult:
    """The outcome of a mail taken too often without one (it stopped the run each time)."""
    reason = (f"gave up after {attempts} attempts: the run stopped while handling this "
              "mail each time")
    return JobResult(outcome=Outcome(key=key, state="failed", reason=reason), label="failed",
                     subject="", ms=0.0)


def process_mails(fetched: list[RawMessage], attempts: dict[str, int], *, s: MailSettings,
                  ledger: Ledger, stop: threading.Event, clock: Clock,
                  backoff: FailureBackoff, key_of: Callable[[MessageRef], str]
                  ) -> list[tuple[RawMessage, JobResult]]:
    """Prepare every mail of a batch (acquired, with ``attempts``), look up their
    duplicates in one ledger query, then deliver them one by one; returns what happened
    to each. Stops early on a stop request (the rest stays acquired and is taken up by
    the next run); lets StorageError and ConnectError out."""
    preps: list[tuple[RawMessage, Prepared | JobResult]] = []
    for raw in fetched:
        if stop.is_set():
            break
        key = key_of(raw.ref)
        if attempts.get(key, 1) > MAX_ATTEMPTS:
            preps.append((raw, poison_result(key, attempts[key])))
        else:
            preps.append((raw, prepare(raw, s=s)))
    # every done mail per Message-ID, oldest first: the duplicate check looks for one
    # with the same content (and reprocess_on_change at the one processed last)
    found = ledger.done_entries(
        s.source, [p.identity for _, p in preps if isinstance(p, Prepared)])
    done: dict[str, list[DoneMail]] = {
        identity: [DoneMail.of(e) for e in entries] for identity, entries in found.items()}
    results: list[tuple[RawMessage, JobResult]] = []
    n = 0
    try:
        for n, (raw, prep) in enumerate(preps):  # noqa: B007 (the finally reads n)
            if isinstance(prep, JobResult):
                res = prep
            elif stop.is_set():
                break
            else:
                res = deliver(prep, s=s, done=done.get(prep.identity, []), stop=stop,
                              clock=clock)
                if res.label == "done":
                    # a second copy later in this batch is compared with this one
                    done.setdefault(prep.identity, []).append(DoneMail(
                        key=prep.key, folder_version=prep.place.folder_version,
                        content_hash=prep.digest, fingerprint=res.outcome.fingerprint))
            results.append((raw, res))
            if res.label == "failed":
                # pause after a failure: min, doubling per failure in a row, up to max
                clock.wait(backoff.failure(), stop)
            elif res.label == "done":
                backoff.success()
        else:
            n = len(preps)
    finally:
        # mails not delivered (a stop request, a full disk): their part files go
        for _, rest in preps[n:]:
            if isinstance(rest, Prepared):
                discard(rest)
    return results
