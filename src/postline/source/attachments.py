"""Attachment parts: hashed and (where the policy admits) stored in scratch files until the
runner moves them to their home. Shared by the fast and the stdlib parser.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from postline.files import make_dirs
from postline.source.limits import MAX_STORED

if TYPE_CHECKING:
    from postline.source.mime import ParsedMail

class AttachmentPolicy(Protocol):
    load: bool

    def type_reason(self, content_type: str) -> str | None: ...

    def size_reason(self, content_type: str, size: int, stored_total: int) -> str | None: ...


class Scratch:
    """Where the parser keeps stored attachment parts until the runner moves them to their
    home: files ``<directory>/<prefix>NNN.part``, remembered so that exactly these are
    removed again. One flat directory for every mail of a runner (a directory per mail
    cost a mkdir and an rmdir each, ~0.4 ms on the bench machine's disk)."""

    __slots__ = ("directory", "prefix", "files", "_made", "pending")

    def __init__(self, directory: Path, prefix: str | Callable[[], str] = "") -> None:
        """``prefix`` may be a function: most mails store no part, and need no name."""
        self.directory = directory
        self.prefix = prefix
        self.files: list[Path] = []
        self._made = 0
        self.pending: list[_Pending] = []   # the store thread's work on these files

    def new_file(self) -> Path:
        """A new part file's path (its directory is made when a first write misses it)."""
        if not self._made:
            self.directory = Path(self.directory)
            if callable(self.prefix):
                self.prefix = self.prefix()
        path = self.directory / f"{self.prefix}{self._made:03d}.part"
        self._made += 1
        self.files.append(path)
        return path

    def forget(self, path: Path) -> None:
        """``path`` was moved away: not ours to remove any more."""
        if path in self.files:
            self.files.remove(path)

    def clear(self) -> None:
        """Remove every part file still there (those moved away are gone already); waits
        for the store thread to be done with them first (it creates them)."""
        for p in self.pending:
            p.wait()
        self.pending.clear()
        for path in self.files:
            try:
                path.unlink()
            except OSError:
                pass
        self.files.clear()


class Attachment:
    """One attachment as parsed: decoded size and hash; ``temp_path`` where it was stored.

    ``sha256`` may still be computed by the store thread (see :class:`_Store`): reading
    it waits for the hash and the file's write, and raises what the write raised."""

    __slots__ = ("filename", "content_type", "disposition", "content_id", "size", "_sha256",
                 "temp_path", "skipped_reason")

    def __init__(self, *, filename: str | None, content_type: str, disposition: str | None,
                 content_id: str | None, size: int, sha256: str | _Pending,
                 temp_path: Path | None, skipped_reason: str | None) -> None:
        self.filename = filename
        self.content_type = content_type
        self.disposition = disposition
        self.content_id = content_id
        self.size = size
        self._sha256 = sha256
        self.temp_path = temp_path
        self.skipped_reason = skipped_reason

    @property
    def sha256(self) -> str:
        if isinstance(self._sha256, _Pending):
            self._sha256 = self._sha256.result()
        return self._sha256


class _Pending:
    """One part being hashed (and written to ``path``) by the store thread: what it has
    done so far, and, once done, the hash or the error."""

    __slots__ = ("_sha", "_path", "_out", "_done", "_value", "_error", "held")

    def __init__(self, path: Path | None) -> None:
        self._sha = hashlib.sha256()
        self._path = path
        self._out: BinaryIO | None = None
        self._done = threading.Event()
        self._value = ""
        self._error: BaseException | None = None
        self.held = 0   # bytes of this part waiting for the thread

    def result(self) -> str:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> None:
        """Until the store thread is done with the part (its error, if any, is not ours)."""
        self._done.wait()

    # -- in the store thread ----------------------------------------------------------------

    def _add(self, chunk: bytes) -> None:
        if self._error is not None:
            return
        try:
            if self._path is not None and self._out is None:
                self._out = _create(self._path)
            self._sha.update(chunk)
            if self._out is not None:
                self._out.write(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the hash
            self._error = exc

    def _finish(self) -> None:
        try:
            if self._error is None and self._path is not None and self._out is None:
                self._out = _create(self._path)   # a part of no bytes: an empty file
            if self._out is not None:
                try:
                    if self._error is None:
                        self._out.flush()
                        if hasattr(os, "posix_fadvise"):   # not on macOS
                            # start writing it back now: the batch's commit then finds
                            # little left to wait for
                            os.posix_fadvise(self._out.fileno(), 0, 0,
                                             os.POSIX_FADV_DONTNEED)
                finally:
                    self._out.close()
            if self._error is None:
                self._value = self._sha.hexdigest()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the hash
            if self._error is None:
                self._error = exc
        finally:
            self._out = None
            self._done.set()


class _Store:
    """One thread that creates the attachment files, hashes the parts and writes them while
    the runner's thread goes on parsing (``open``, SHA-256, ``write`` and ``posix_fadvise``
    let go of the GIL). On the bench mailbox this takes ~0.3 s off the runner's thread,
    which is the critical path, onto the second core, which had time to spare; whole runs
    were ~0.1 s faster (the GIL hand-overs take back part of it).

    At most ``MAX_BYTES`` of decoded parts wait for the thread, and at most ``PART_BYTES``
    of one part: a producer beyond that waits, so a 100 MB attachment decoded in 1 MB
    chunks is never held whole, while a burst of small mails with attachments does not
    make the runner wait (writing fresh page cache is the slow step here)."""

    MAX_BYTES = 64 << 20
    PART_BYTES = 4 << 20

    def __init__(self) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._room = threading.Condition()
        self._held = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _start(self) -> None:
        # Exactly one thread (several workflows' runners share it): the chunks of a part
        # must be hashed and written in order.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._room:
            if self._thread is None or self._pid != os.getpid():   # (after a fork: anew)
                self._q = queue.SimpleQueue()
                self._held = 0
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._work, name="postline-store",
                                                daemon=True)
                self._thread.start()

    def put(self, part: _Pending, chunk: bytes | None) -> None:
        """Hand ``chunk`` of ``part`` to the thread; None: the part's end (its file is
        closed and the part resolved)."""
        if chunk is not None:
            n = len(chunk)
            with self._room:
                while (self._held and self._held + n > self.MAX_BYTES
                       or part.held and part.held + n > self.PART_BYTES):
                    self._room.wait()
                self._held += n
                part.held += n
        self._start()
        self._q.put((part, chunk))

    def _work(self) -> None:
        while True:
            part, chunk = self._q.get()
            if chunk is None:
                part._finish()
                continue
            part._add(chunk)
            with self._room:
                self._held -= len(chunk)
                part.held -= len(chunk)
                self._room.notify_all()


def _create(path: Path) -> BinaryIO:
    # 0600 (the rename to the part's home keeps it); no link is followed
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:   # the first part ever: the runner's work dir is new
        make_dirs(path.parent)
        fd = os.open(path, flags, 0o600)
    return open(fd, "wb")


_STORE = _Store()


def _hash_and_store(chunks: Iterable[bytes], temp: Path | None) -> tuple[int, _Pending]:
    """Hand every chunk to the store thread, which hashes it and writes it to ``temp``
    (created there: a file creation costs ~0.4 ms on the bench machine's disk). Returns the
    size and the pending hash; raises what decoding ``chunks`` raises."""
    part = _Pending(temp)
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            _STORE.put(part, chunk)
    finally:
        _STORE.put(part, None)   # the part's end (also after an error)
    return size, part


def add_attachment(mail: ParsedMail, *, chunks: Iterable[bytes], filename: str | None,
                   content_type: str, disposition: str | None, content_id: str | None,
                   policy: AttachmentPolicy, scratch: Scratch) -> None:
    """Hash (and, when the policy admits it, store) one attachment; appended to ``mail``.
    Raises what decoding ``chunks`` or writing raises."""
    reason = policy.type_reason(content_type) if policy.load else \
        "not loaded (attachments.load is false)"
    if reason is None and mail.stored_count >= MAX_STORED:
        # (a file each: 50,000 tiny parts made 50,000 files)
        reason = f"over the limit of {MAX_STORED} stored attachments per mail"
    temp = scratch.new_file() if reason is None else None
    size, sha256 = _hash_and_store(chunks, temp)
    if temp is not None:
        scratch.pending.append(sha256)
        reason = policy.size_reason(content_type, size, mail.stored_total)
        if reason is not None:
            sha256.wait()   # the thread creates the file: remove it after that
            temp.unlink(missing_ok=True)
            scratch.forget(temp)
            temp = None
        else:
            mail.stored_total += size
            mail.stored_count += 1
    mail.attachments.append(Attachment(
        filename=filename, content_type=content_type, disposition=disposition,
        content_id=content_id.strip() if content_id else None, size=size, sha256=sha256,
        temp_path=temp, skipped_reason=reason))
