"""The maildrop operations of the POP3 reader: listing, streaming RETR, DELE, polling."""

from __future__ import annotations

import hashlib
import poplib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from postline.errors import ConfigError
from postline.protocols.base import FolderInfo, FolderState, MessageRef, RawMessage
from postline.protocols.spool import open_spool

INBOX = "INBOX"
TOP_ALL_LINES = 2_000_000_000   # body lines for a TOP that returns the whole mail


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class MaildropOperations:
    """Mailbox operations of :class:`postline.protocols.pop3.Pop3Reader`."""

    host: str
    _numbers: dict[str, int]
    _listed: bool
    _readonly: bool = False
    server_capabilities: dict[str, list[str]]

    def list_folders(self) -> list[FolderInfo]:
        """POP3 has exactly one folder."""
        return [FolderInfo(name=INBOX)]

    def _check_folder(self, folder: str) -> None:
        if folder.upper() != INBOX:
            raise ConfigError(f"POP3 has only the folder INBOX, not {folder!r}",
                              hint="use folder INBOX with POP3, or an IMAP connection")

    def open_folder(self, folder: str, *, readonly: bool = False) -> FolderState:
        """STAT of the maildrop (``folder_version`` is always ""); with ``readonly``
        messages are fetched with TOP, which leaves them unread where RETR would not."""
        self._check_folder(folder)
        self._readonly = readonly
        with self._errors("STAT"):
            count, _size = self._need().stat()
        return FolderState(name=INBOX, folder_version="", next_id=None, exists=count)

    def _ids(self) -> list[tuple[int, str, int]]:
        """(number, id, size) of every message; UIDL, or a header hash without UIDL."""
        pop = self._need()
        with self._errors("LIST"):
            _, lines, _ = pop.list()
        sizes = {int(a): int(b) for a, b in (ln.split()[:2] for ln in lines)}
        ids: dict[int, str] = {}
        if "UIDL" in self.server_capabilities or not self.server_capabilities:
            try:
                with self._errors("UIDL", translate_err=False):
                    _, lines, _ = pop.uidl()
                ids = {int(a): _text(b) for a, b in (ln.split()[:2] for ln in lines)}
            except poplib.error_proto:  # a server without UIDL answers -ERR
                ids = {}
        for num in sizes:
            if num not in ids:
                with self._errors("TOP"):
                    _, head, _ = pop.top(num, 0)
                ids[num] = "sha256:" + hashlib.sha256(b"\r\n".join(head)).hexdigest()[:40]
        return [(n, ids[n], sizes[n]) for n in sorted(sizes)]

    def list_messages(self, folder: str, *, cursor: str | None = None
                      ) -> tuple[list[MessageRef], str | None]:
        """Every message in the maildrop (POP3 has no watermark; the ledger filters)."""
        self._check_folder(folder)
        if self._listed:
            self._reconnect()  # a POP3 session never sees mail that arrived after login
        rows = self._ids()
        self._numbers = {mid: n for n, mid, _ in rows}
        self._listed = True
        return [MessageRef(folder=INBOX, folder_version="", id=mid, size=size)
                for _, mid, size in rows], cursor

    def _number(self, ref: MessageRef) -> int | None:
        if not self._numbers:
            self._numbers = {mid: n for n, mid, _ in self._ids()}
            self._listed = True
        return self._numbers.get(ref.id)

    def fetch(self, refs: Iterable[MessageRef], *, spool_dir: Path,
              inline_limit: int = 8 * 1024 * 1024, batch_size: int = 100
              ) -> Iterator[RawMessage]:
        """RETR each message; large ones are streamed line by line into ``spool_dir``."""
        for ref in refs:
            self._check_folder(ref.folder)
            num = self._number(ref)
            if num is None:
                continue
            if (ref.size or 0) > inline_limit:
                out, path = open_spool(spool_dir, f"pop3-{num}")
                try:
                    with out:
                        self._retr(num, out.write)
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
                yield RawMessage(ref=ref, path=path)
            else:
                parts: list[bytes] = []
                self._retr(num, parts.append)
                yield RawMessage(ref=ref, data=b"".join(parts))

    def _retr(self, num: int, write: Any) -> None:
        # poplib.retr keeps every line in a list and refuses lines over 2048 bytes, so the
        # multi-line answer is read here: no length limit, dot-unstuffed, CRLF kept.
        pop = self._need()
        # TOP with more body lines than any mail has is RETR without the read mark
        command = f"TOP {num} {TOP_ALL_LINES}" if self._readonly else f"RETR {num}"
        with self._errors(command):
            pop._putcmd(command)
            pop._getresp()
            while True:
                line = pop.file.readline()
                if not line:
                    raise EOFError(f"connection closed during {command}")
                if line in (b".\r\n", b".\n"):
                    return
                if line.startswith(b".."):
                    line = line[1:]
                write(line)

    def delete(self, refs: Iterable[MessageRef]) -> None:
        """DELE each message, then QUIT to commit and log in again."""
        nums = [n for n in (self._number(r) for r in refs) if n is not None]
        if not nums:
            return
        with self._errors("DELE"):
            for n in nums:
                self._need().dele(n)
        self._reconnect()

    def move(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        raise ConfigError(f"POP3 has no folders: cannot move mail to {target_folder!r}",
                          hint="leave the done/error/ignore folders empty for a POP3 "
                               "source (mail can be deleted instead), or use IMAP")

    def copy(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        raise ConfigError(f"POP3 has no folders: cannot copy mail to {target_folder!r}",
                          hint="use IMAP to file mail into folders")

    def set_flags(self, refs: Iterable[MessageRef], flags: Iterable[str], *, add: bool = True
                  ) -> None:
        """POP3 has no flags: nothing to do."""

    def wait_for_changes(self, folder: str, timeout: float) -> bool:
        """Poll STAT on a fresh login every ``poll_interval`` s; True when it changed."""
        self._check_folder(folder)
        with self._errors("STAT"):
            before = self._need().stat()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(self._poll, remaining))
            self._reconnect()
            with self._errors("STAT"):
                if self._need().stat() != before:
                    return True
        return False
