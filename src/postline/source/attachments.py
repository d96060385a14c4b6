"""Attachment parts: hashed and (where the policy admits) stored in scratch files until the
runner moves them to their home. Shared by the fast and the stdlib parser.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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

    __slots__ = ("directory", "prefix", "files", "_made")

    def __init__(self, directory: Path, prefix: str | Callable[[], str] = "") -> None:
        """``prefix`` may be a function: most mails store no part, and need no name."""
        self.directory = directory
        self.prefix = prefix
        self.files: list[Path] = []
        self._made = 0

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
        """Remove every part file still there (those moved away are gone already)."""
        for path in self.files:
            try:
                path.unlink()
            except OSError:
                pass
        self.files.clear()


class Attachment:
    """One attachment as parsed: decoded size and hash; ``temp_path`` where it was stored."""

    __slots__ = ("filename", "content_type", "disposition", "content_id", "size", "sha256",
                 "temp_path", "skipped_reason")

    def __init__(self, *, filename: str | None, content_type: str, disposition: str | None,
                 content_id: str | None, size: int, sha256: str, temp_path: Path | None,
                 skipped_reason: str | None) -> None:
        self.filename = filename
        self.content_type = content_type
        self.disposition = disposition
        self.content_id = content_id
        self.size = size
        self.sha256 = sha256
        self.temp_path = temp_path
        self.skipped_reason = skipped_reason


def _hash_and_store(chunks: Iterable[bytes], temp: Path | None) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    out = None
    if temp is not None:
        try:
            out = open(temp, "wb")
        except FileNotFoundError:   # the first part ever: the runner's work dir is new
            temp.parent.mkdir(parents=True, exist_ok=True)
            out = open(temp, "wb")
    try:
        for chunk in chunks:
            sha.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            # start writing it to disk now, in the background: the batch's commit makes it
            # durable (workflow/commit.py) and then finds little left to wait for; and the
            # pages leave the cache, which a stored attachment does not need
            if hasattr(os, "posix_fadvise"):   # not on macOS
                os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        if out is not None:
            out.close()
    return size, sha.hexdigest()


def add_attachment(mail: ParsedMail, *, chunks: Iterable[bytes], filename: str | None,
                   content_type: str, disposition: str | None, content_id: str | None,
                   policy: AttachmentPolicy, scratch: Scratch) -> None:
    """Hash (and, when the policy admits it, store) one attachment; appended to ``mail``.
    Raises what decoding ``chunks`` or writing raises."""
    reason = policy.type_reason(content_type) if policy.load else \
        "not loaded (attachments.load is false)"
    temp = scratch.new_file() if reason is None else None
    size, sha256 = _hash_and_store(chunks, temp)
    if temp is not None:
        reason = policy.size_reason(content_type, size, mail.stored_total)
        if reason is not None:
            temp.unlink(missing_ok=True)
            scratch.forget(temp)
            temp = None
        else:
            mail.stored_total += size
    mail.attachments.append(Attachment(
        filename=filename, content_type=content_type, disposition=disposition,
        content_id=content_id.strip() if content_id else None, size=size, sha256=sha256,
        temp_path=temp, skipped_reason=reason))
