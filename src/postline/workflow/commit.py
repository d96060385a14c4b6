"""Committing batches: their files made durable, then the ledger, in a helper process.

The order for one batch never changes (the crash-safety argument in runner.py): the
batch's files are synced (stored attachments and the sinks' writes: fdatasync of files,
fsync of the directories that got new entries), then the ledger's final states are
written in one durable transaction with the acquisition of a batch to come. What the
helper adds is overlap: those syncs and the ledger's own fsync are ~5 ms of waiting per
batch on the bench machine (far more on network disks), and while the helper waits, the
runner already processes the next batch. The runner takes the result of batch k's commit
before it reports and moves batch k's mails, and before it starts batch k+2, which that
commit acquired.

Why a process and not a thread: a second thread has to take the GIL back after every
sync, from a runner thread that releases it some 75,000 times a round (once per TLS
record); measured, a commit thread made the runner's own work slower by about what it
saved. The helper needs no GIL of ours: it gets plain data (paths, outcomes, places)
over a pipe and answers with the attempts of what it acquired.

Between runner and helper (our own child, hence pickle): stdin gets one pickled
``(path of the ledger,)`` and then one pickled :class:`Job` after another; stdout answers
each with a pickled ``(job id, attempts or None, error or None)``. EOF on stdin ends it.
When the helper cannot start or ends early, the jobs it has not answered, and all later
ones, run inline (:class:`InlineCommitter`).
"""

from __future__ import annotations

import abc
import logging
import mmap
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postline.errors import StorageError
from postline.state.ledger import Ledger, Outcome, Place, SqliteLedger

log = logging.getLogger("postline.workflow")


@dataclass
class Job:
    """One commit: sync ``files`` (fdatasync) and ``dirs`` (fsync), then write
    ``outcomes``, acquire ``acquire`` and mark ``settled`` keys in one transaction."""

    source: str
    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    acquire: list[Place] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    id: int = 0


def run_job(job: Job, ledger: Ledger) -> dict[str, int]:
    """Carry out ``job``; returns the attempts of what it acquired. Raises OSError (a
    sync) or StorageError (the ledger)."""
    for f in dict.fromkeys(job.files):
        sync_path(f, data_only=True, drop_cache=True)
    for d in dict.fromkeys(job.dirs):
        sync_path(d, data_only=False)
    attempts: dict[str, int] = {}
    if job.outcomes or job.acquire:
        if job.acquire:
            attempts = ledger.finish_and_acquire(job.source, job.outcomes, job.acquire)
        else:
            ledger.finish(job.source, job.outcomes)
    if job.settled:
        ledger.mark_settled(job.source, job.settled)
    return attempts


def sync_path(path: str | Path, *, data_only: bool, drop_cache: bool = False) -> None:
    """fdatasync (``data_only``) or fsync the file or directory ``path``; with
    ``drop_cache`` its now clean pages then leave the page cache. Raises OSError naming
    it.

    Why drop them: postline never reads back what it wrote (records, attachments), and
    the kernel hands pages given back this way to the next batch's writes. Writing into
    pages never used before costs far more on a VM (each is a host page fault): 300 MB
    written in 1 MB files took 0.6-0.9 s into fresh pages and 0.08 s into recycled ones
    (fdatasync + POSIX_FADV_DONTNEED per file) on the bench machine. A reader of the
    files (a JSONL consumer) reads them from disk instead."""
    fd = os.open(path, os.O_RDONLY)
    try:
        # (macOS has no fdatasync)
        (getattr(os, "fdatasync", os.fsync) if data_only else os.fsync)(fd)
        if drop_cache and hasattr(os, "posix_fadvise"):   # not on macOS
            # all but a partly filled last page: the next append (JSONL) would read it
            # back from the disk first
            whole = os.fstat(fd).st_size // mmap.PAGESIZE * mmap.PAGESIZE
            if whole:   # (a length of 0 would mean: to the end)
                os.posix_fadvise(fd, 0, whole, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise
    finally:
        os.close(fd)


def _error_of(exc: BaseException) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError):
        return StorageError.from_os_error(exc, what=f"making {exc.filename} durable"
                                          if exc.filename else "making the batch durable")
    return StorageError(f"committing a batch failed: {type(exc).__name__}: {exc}")


class Pending:
    """A submitted job; :meth:`Committer.result` gives its outcome."""

    def __init__(self, job_id: int) -> None:
        self.id = job_id
        self.done = False
        self.attempts: dict[str, int] = {}
        self.error: StorageError | None = None


class Committer(abc.ABC):
    """Runs commit jobs in the order submitted."""

    @abc.abstractmethod
    def submit(self, job: Job) -> Pending:
        """Start ``job`` after those submitted before."""

    @abc.abstractmethod
    def result(self, pending: Pending) -> dict[str, int]:
        """Wait for ``pending``: the attempts of what it acquired. Raises StorageError."""

    def drain(self) -> None:  # noqa: B027 (optional hook)
        """Wait for every job submitted; their errors are dropped. Never raises."""

    def close(self) -> None:
        """Drain and release; never raises."""
        self.drain()


class InlineCommitter(Committer):
    """Each job runs at once, in the caller's thread."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def submit(self, job: Job) -> Pending:
        p = Pending(job.id)
        try:
            p.attempts = run_job(job, self.ledger)
        except Exception as exc:  # noqa: BLE001 - handed over by result()
            p.error = _error_of(exc)
        p.done = True
        return p

    def result(self, pending: Pending) -> dict[str, int]:
        if pending.error is not None:
            raise pending.error
        return pending.attempts


class ProcessCommitter(Committer):
    """Jobs run in a helper process (see the module docstring). Should the helper fail to
    start or end early (killed, no memory), the jobs it did not answer run again inline
    on ``ledger``, in order, and every later one too; the log says so once. (Running one
    again is harmless: syncs and final states are idempotent; an acquisition counts one
    attempt more.)"""

    def __init__(self, ledger_path: Path, ledger: Ledger) -> None:
        env = dict(os.environ)
        home = str(Path(__file__).resolve().parents[2])  # the directory holding postline/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "postline.workflow.commit"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        self._open: dict[int, tuple[Pending, Job]] = {}
        self._next = 0
        self._inline: InlineCommitter | None = None
        self._ledger = ledger
        self._send((str(ledger_path),))

    def _send(self, obj: Any) -> None:
        try:
            pickle.dump(obj, self._in, protocol=pickle.HIGHEST_PROTOCOL)
            self._in.flush()
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, why: BaseException) -> None:
        if self._inline is not None:
            return
        log.warning("the commit helper stopped (%s); committing in the runner from now on",
                    type(why).__name__)
        self._inline = InlineCommitter(self._ledger)
        for p, job in self._open.values():   # in the order submitted
            done = self._inline.submit(job)
            p.done, p.attempts, p.error = True, done.attempts, done.error
        self._open.clear()
        try:
            self._proc.kill()
        except OSError:
            pass

    def submit(self, job: Job) -> Pending:
        self._next += 1
        job.id = self._next
        if self._inline is not None:
            return self._inline.submit(job)
        p = Pending(job.id)
        self._open[job.id] = (p, job)
        self._send(job)
        return p

    def _receive(self) -> None:
        try:
            job_id, attempts, error = pickle.load(self._out)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self._give_up(exc)
            return
        p, _ = self._open.pop(job_id)
        p.done, p.attempts = True, attempts or {}
        if error is not None:
            p.error = StorageError(error[0])
            p.error.errno = error[1]  # type: ignore[attr-defined]

    def result(self, pending: Pending) -> dict[str, int]:
        while not pending.done:
            self._receive()
        if pending.error is not None:
            raise pending.error
        return pending.attempts

    def drain(self) -> None:
        while self._open:
            self._receive()

    def close(self) -> None:
        self.drain()
        for f in (self._in, self._out):
            try:
                f.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def open_committer(ledger: Ledger, *, ledger_path: Path | None) -> Committer:
    """A :class:`ProcessCommitter` for a SQLite ledger at ``ledger_path``, else (or when
    the helper cannot start) an :class:`InlineCommitter` on ``ledger``."""
    if ledger_path is not None:
        try:
            return ProcessCommitter(ledger_path, ledger)
        except OSError as exc:
            log.warning("cannot start the commit helper (%s); committing inline", exc)
    return InlineCommitter(ledger)


def main() -> int:
    """The helper: jobs from stdin, answers to stdout (``python -m
    postline.workflow.commit``)."""
    # Ctrl-C reaches the whole process group and systemd's SIGTERM the whole unit: the
    # runner finishes the mails in flight then, and needs this helper for their commits.
    # It ends when the runner closes its stdin (or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    (path,) = pickle.load(stdin)
    ledger = SqliteLedger(path=Path(path))
    try:
        while True:
            try:
                job: Job = pickle.load(stdin)
            except EOFError:
                return 0
            try:
                answer = (job.id, run_job(job, ledger), None)
            except Exception as exc:  # noqa: BLE001 - answered, the runner decides
                err = _error_of(exc)
                answer = (job.id, None, (str(err), getattr(err, "errno", None)))
            pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()
    finally:
        ledger.close()


if __name__ == "__main__":
    sys.exit(main())
