"""The ``jsonl`` sink: one line per record, appended per batch, idempotent by ledger key.

The batch's lines are appended with one write and made durable with one fdatasync by the
batch's commit. A sidecar ``<file>.keys`` lists ``offset key`` of every line, written after
that sync (so it never names a line that is not on disk) and not fsynced itself: on open
the lines after the last good indexed offset are indexed again, a torn last line is cut
off, and keys already present are never appended again. Every JsonlSink of a process that
names one file shares one :class:`_JsonlFile`. A mail that fails after its line was
appended has it dropped from the batch (:meth:`JsonlSink.discard`) before anything is
written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from postline.chunks import chunks
from postline.files import FILE_MODE, dir_mode_for, make_dirs, set_mode
from postline.protocols.base import RawMessage
from postline.workflow.sinks import Sink, Staged, record_line

log = logging.getLogger("postline.sinks")


class _JsonlFile:
    """One JSONL file shared by every sink instance in this process that names it."""

    def __init__(self, path: Path, mode: int = FILE_MODE) -> None:
        self.path = path
        self.mode = mode
        self.index_path = path.with_name(path.name + ".keys")
        self.lock = threading.Lock()
        self.keys: set[str] = set()
        self._fh = None
        self._idx = None
        self._lines: list[bytes] = []          # appended, not yet written
        self._line_keys: list[str] = []
        self._carry: list[tuple[int, list[bytes], list[str]]] = []  # written, not synced
        self.users = 0

    def open(self) -> None:
        if self._fh is not None:
            return
        make_dirs(self.path.parent, dir_mode_for(self.mode))
        indexed_to = 0
        size = self.path.stat().st_size if self.path.exists() else 0
        if self.index_path.exists():
            with open(self.index_path, "rb") as f:
                data = f.read()
            # The index is not fsynced (it can always be rebuilt from the JSONL file):
            # after a power loss its tail may be missing or torn. Keep the entries up to
            # the first bad one; the lines after it are indexed again by _catch_up.
            good = 0
            for line in data.splitlines(keepends=True):
                off_text, _, key = line.rstrip(b"\n").partition(b" ")
                try:
                    off = int(off_text)
                    key_text = key.decode("utf-8")
                except ValueError:
                    break
                if not line.endswith(b"\n") or not key_text or off > size or off < indexed_to:
                    break
                self.keys.add(key_text)
                indexed_to = off
                good += len(line)
            if good != len(data):
                with open(self.index_path, "r+b") as f:
                    f.truncate(good)
        self._fh = _open_with_mode(self.path, "a+b", self.mode)
        try:
            self._idx = _open_with_mode(self.index_path, "ab", self.mode)
            size = self._fh.seek(0, os.SEEK_END)
            if size > indexed_to:
                self._catch_up(indexed_to, size)
        except BaseException:
            # a half-open file would make the next open() return early and flush() then
            # skip every batch (it needs both handles): close and let the caller see why
            for f in (self._fh, self._idx):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            self._fh = self._idx = None
            raise

    def _catch_up(self, start: int, size: int) -> None:
        # Lines written after the index was last appended (a crash between the two writes).
        assert self._fh is not None and self._idx is not None
        self._fh.seek(start)
        tail = self._fh.read(size - start)
        complete = tail[:tail.rfind(b"\n") + 1]
        if len(complete) != len(tail):  # torn last line: cut it off
            self._fh.truncate(start + len(complete))
        off = start
        for line in complete.splitlines(keepends=True):
            off += len(line)
            try:
                key = json.loads(line)["key"]
            except (ValueError, KeyError, TypeError):
                continue
            self.keys.add(key)
            self._idx.write(f"{off} {key}\n".encode())
        self._idx.flush()
        os.fsync(self._idx.fileno())
        self._fh.seek(0, os.SEEK_END)

    def append(self, record: dict[str, Any]) -> None:
        key = record["key"]
        line = record_line(record)
        with self.lock:
            if key in self.keys:
                return
            self._lines.append(line)
            self._line_keys.append(key)
            self.keys.add(key)

    def discard(self, key: str) -> None:
        """Drop the line of ``key`` appended since the last :meth:`stage` (never written,
        so nothing on disk changes); a later :meth:`append` of it is taken again. A key
        whose line is already written stays."""
        with self.lock:
            for i in range(len(self._line_keys) - 1, -1, -1):
                if self._line_keys[i] == key:
                    del self._lines[i], self._line_keys[i]
                    self.keys.discard(key)
                    return

    def stage(self) -> Staged:
        """Write the batch's lines with one write (not yet durable: the commit fdatasyncs
        the file); :meth:`committed` then indexes them, so the index only ever names
        lines that are on disk. Raises OSError (the lines are kept for the next try)."""
        with self.lock:
            if self._fh is None or self._idx is None:
                return Staged()
            carried, self._carry = self._carry, []   # written before, commit failed
            if not self._lines:
                return Staged(files=[self.path], token=carried) if carried else Staged()
            lines, keys = self._lines, self._line_keys
            self._lines, self._line_keys = [], []
        end = None
        try:
            end = self._fh.seek(0, os.SEEK_END)
            _append(self._fh.fileno(), lines)
        except BaseException:
            if end is not None:
                # a write that failed half way (a full disk, a file size limit) leaves no
                # torn line behind for the lines of the next batch to follow
                try:
                    os.ftruncate(self._fh.fileno(), end)
                except OSError:
                    pass
            with self.lock:
                self._lines[:0] = lines
                self._line_keys[:0] = keys
                self._carry[:0] = carried
            raise
        return Staged(files=[self.path], token=carried + [(end, lines, keys)])

    def committed(self, staged: Staged) -> None:
        if not staged.token or self._idx is None:
            return
        index = []
        for end, lines, keys in staged.token:
            for line, key in zip(lines, keys, strict=False):
                end += len(line)
                index.append(f"{end} {key}\n")
        # written only now that the lines are on disk, so it never names a lost line
        self._idx.write("".join(index).encode())
        self._idx.flush()

    def unstage(self, staged: Staged) -> None:
        with self.lock:
            self._carry[:0] = staged.token or []

    def close(self) -> None:
        with self.lock:
            # lines never flushed were never committed in the ledger: they come again
            for key in self._line_keys:
                self.keys.discard(key)
            self._lines.clear()
            self._line_keys.clear()
            for f in (self._fh, self._idx):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            self._fh = self._idx = None


_JSONL_FILES: dict[Path, _JsonlFile] = {}
_JSONL_LOCK = threading.Lock()


class JsonlSink(Sink):
    label = "jsonl"

    def __init__(self, *, path: Path, mode: int = FILE_MODE) -> None:
        """``mode``: of the file and its ``.keys`` index (set on every open, so a changed
        setting applies to an existing file too)."""
        self.path = Path(path).resolve()
        with _JSONL_LOCK:
            self._file = _JSONL_FILES.setdefault(self.path, _JsonlFile(self.path, mode))

    def open(self) -> None:
        with _JSONL_LOCK:
            self._file.open()
            self._file.users += 1

    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        self._file.append(record)

    def discard(self, key: str) -> None:
        self._file.discard(key)

    def stage(self) -> Staged:
        return self._file.stage()

    def committed(self, staged: Staged) -> None:
        self._file.committed(staged)

    def unstage(self, staged: Staged) -> None:
        self._file.unstage(staged)

    def close(self) -> None:
        with _JSONL_LOCK:
            self._file.users -= 1
            if self._file.users <= 0:
                _JSONL_FILES.pop(self.path, None)
                try:
                    self._file.close()
                except OSError as exc:  # close never raises (Sink contract)
                    log.warning("closing %s: %s", self.where, exc)


def _open_with_mode(path: Path, how: str, mode: int):
    """``open(path, how)`` ("ab" or "a+b"), the file created or set to ``mode`` exactly."""
    flags = os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_RDWR if "+" in how
                                                        else os.O_WRONLY)
    fd = os.open(path, flags, mode)
    try:
        set_mode(fd, mode, path)
        return open(fd, how)
    except BaseException:
        os.close(fd)
        raise


def _append(fd: int, lines: list[bytes]) -> None:
    """Write ``lines`` at the end of ``fd`` (opened for appending) with ``writev``: no
    joined copy of the batch (~2 MB a batch of the bench mailbox). Raises OSError."""
    if not hasattr(os, "writev"):   # pragma: no cover - not on Windows
        _write_all(fd, b"".join(lines))
        return
    for chunk in chunks(lines, 512):   # well under IOV_MAX (1024 on Linux)
        n = os.writev(fd, chunk)
        if n < sum(map(len, chunk)):      # a short write: the rest of the chunk
            _write_all(fd, b"".join(chunk)[n:])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
