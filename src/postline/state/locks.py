"""Process locks: "only one process does this at a time" for one state directory.

A :class:`ProcessLock` is an exclusive, non-blocking ``flock`` on a small file. The kernel
releases it when the holder dies (SIGKILL and OOM included), so a crash never leaves a
stale lock behind and nothing has to be cleaned up by hand. The holder writes who it is
(pid, host, start time) into the file, so that the process that is refused can say which
process holds it.

Used for the outbox (one deliverer per Email Service) and for sources (one reader per
Email Source: two would each deliver every mail, and each would empty the other's scratch
directory at start).

The file descriptor is not inherited by child processes (Python opens files with
``O_CLOEXEC``), so a helper that outlives a killed runner does not keep the lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from postline.files import make_dirs


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its holder wrote it (any part may be unknown)."""

    pid: int | None
    host: str | None
    since: float | None

    def describe(self) -> str:
        """E.g. ``pid 4242 on host etl-1, since 2026-12-02 07:00:00 UTC``."""
        parts = []
        if self.pid:
            parts.append(f"pid {self.pid}")
        if self.host:
            parts.append(f"on host {self.host}")
        text = " ".join(parts) or "an unknown process"
        if self.since:
            text += ", since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return text


def parse_holder(text: str) -> Holder:
    """The holder written by :meth:`ProcessLock.try_acquire` (``pid host since``); lenient."""
    words = text.split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    host = words[1] if len(words) > 1 else None
    try:
        since = float(words[2]) if len(words) > 2 else None
    except ValueError:
        since = None
    return Holder(pid=pid, host=host, since=since)


class ProcessLock:
    """An exclusive, non-blocking ``flock`` on ``path``; released when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """True when this process now holds (or already held) the lock."""
        if self._fd is not None:
            return True
        make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> Holder | None:
        """Who wrote the file last (the current holder while it is locked), where readable."""
        try:
            return parse_holder(self.path.read_text())
        except OSError:
            return None

    def holder_pid(self) -> int | None:
        """The pid written by the current holder, where readable."""
        h = self.holder()
        return h.pid if h else None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
