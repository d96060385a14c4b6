"""The mailbox operations of the IMAP reader (folders, listing, fetching, moving, IDLE).

Kept apart from the connection/authentication half in ``imap.py`` to keep each module
readable; :class:`MailboxOperations` is a mixin that needs ``_need()``, ``_errors()``,
``capabilities``, ``_selected``, ``_uidvalidity`` and ``_known_folders`` from its host.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from imapclient import exceptions as imx

from postline.errors import ProtocolError
from postline.protocols.base import FolderInfo, FolderState, MessageRef, RawMessage
from postline.protocols.capability_names import ImapCapability
from postline.protocols.imap_bulk import COMMAND_MAX_MAILS, BulkFetch, Fetched, ResponseReader, plan

_SPECIAL = {"\\SENT", "\\TRASH", "\\DRAFTS", "\\JUNK", "\\ARCHIVE", "\\ALL", "\\FLAGGED"}
_NEW_MAIL = {b"EXISTS", b"RECENT"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _server_text(exc: BaseException) -> str:
    """The server's words from an imaplib error (which often carries ``b'...'`` reprs)."""
    text = _text(exc.args[0]) if exc.args else str(exc)
    text = text.strip()
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        text = text[2:-1]
    return text or exc.__class__.__name__


def _cursor_uid(cursor: str | None) -> int | None:
    """The UID an IMAP cursor stands for; None for no cursor or one that is not ours (a
    full listing follows, which is always safe)."""
    if cursor and cursor.isdigit():
        return int(cursor)
    return None


def _by_folder(refs: Iterable[MessageRef]) -> dict[str, list[MessageRef]]:
    groups: dict[str, list[MessageRef]] = {}
    for ref in refs:
        groups.setdefault(ref.folder, []).append(ref)
    return groups


class MailboxOperations:
    """Folder and message operations of :class:`postline.protocols.imap.ImapReader`."""

    host: str
    port: int
    _selected: str | None
    _uidvalidity: str
    _uidnext: int | None
    _fresh: bool        # the last SELECT's UIDNEXT is still unused by a listing
    _readonly: bool
    _known_folders: set[str]
    _delimiter: str | None
    _bulk: BulkFetch | None

    # -- folders ---------------------------------------------------------------------------

    def list_folders(self) -> list[FolderInfo]:
        """Every folder, names decoded from modified UTF-7."""
        client = self._need()
        with self._errors("LIST"):
            rows = client.list_folders()
        out = []
        for flags, delim, name in rows:
            names = tuple(_text(f) for f in flags)
            special = next((f for f in names if f.upper() in _SPECIAL), None)
            out.append(FolderInfo(name=_text(name), delimiter=_text(delim) if delim else None,
                                  flags=names, special_use=special))
            self._known_folders.add(_text(name))
        return out

    def _wire(self, folder: str) -> str:
        """``folder`` as the server names it. Folder names in postline's assets use "/"
        between levels (``Archive/Done``), as Dovecot's usual setup, Exchange and Gmail do;
        a server with another hierarchy delimiter (Courier, Cyrus, Dovecot with Maildir++'s
        default: ".") gets its own, which it reports to ``LIST "" ""`` (RFC 3501 6.3.8)."""
        if "/" not in folder:
            return folder
        if self._delimiter is None:
            with self._errors('LIST "" ""'):
                rows = self._need().list_folders("", "")
            self._delimiter = next((_text(d) for _, d, _ in rows if d), "/")
        return folder if self._delimiter == "/" else folder.replace("/", self._delimiter)

    def _select(self, folder: str, *, force: bool = False, readonly: bool = False) -> dict:
        client = self._need()
        if self._selected == folder and not force:
            return {}
        with self._errors(f"{'EXAMINE' if readonly else 'SELECT'} {folder!r}"):
            resp = client.select_folder(self._wire(folder), readonly=readonly)
        self._selected = folder
        self._readonly = readonly
        self._uidvalidity = str(resp.get(b"UIDVALIDITY", ""))
        nxt = resp.get(b"UIDNEXT")
        self._uidnext = int(nxt) if nxt is not None else None
        self._fresh = True
        self._known_folders.add(folder)
        return resp

    def open_folder(self, folder: str, *, readonly: bool = False) -> FolderState:
        """Select ``folder`` (EXAMINE it with ``readonly``: nothing can change there); its
        UIDVALIDITY, UIDNEXT and message count."""
        resp = self._select(folder, force=True, readonly=readonly)
        return FolderState(name=folder, folder_version=self._uidvalidity,
                           next_id=str(self._uidnext) if self._uidnext is not None else None,
                           exists=int(resp.get(b"EXISTS", 0)))

    def _ensure_folder(self, folder: str) -> None:
        if folder in self._known_folders:
            return
        client = self._need()
        wire = self._wire(folder)
        try:
            with self._errors(f"CREATE {folder!r}", translate_no=False):
                client.create_folder(wire)  # servers create missing parents themselves
        except imx.IMAPClientError as exc:
            text = _server_text(exc)
            with self._errors(f"LIST {folder!r}"):
                exists = "ALREADYEXISTS" in text.upper() or client.folder_exists(wire)
            if not exists:
                raise ProtocolError(f"cannot create folder {folder!r} on {self.host}: {text}",
                                    hint="check the folder name and the delimiter the "
                                         "server uses", disposition="fatal") from exc
        self._known_folders.add(folder)

    def _check_version(self, folder: str, refs: list[MessageRef]) -> list[int]:
        self._select(folder)
        for ref in refs:
            if ref.folder_version and ref.folder_version != self._uidvalidity:
                raise ProtocolError(
                    f"UIDVALIDITY of folder {folder!r} changed from {ref.folder_version} to "
                    f"{self._uidvalidity}: the message ids are no longer valid",
                    hint="list the folder again", disposition="retriable")
        return [int(r.id) for r in refs]

    # -- listing and fetching ------------------------------------------------------------

    def list_messages(self, folder: str, *, cursor: str | None = None
                      ) -> tuple[list[MessageRef], str | None]:
        """Messages with a UID above ``cursor`` (all when None), oldest first, and the next
        cursor: the highest UID the folder can hold so far (UIDNEXT - 1, or the highest
        UID listed). With a cursor and a UIDNEXT that has not moved past it, nothing is
        sent after the SELECT: a round over an unchanged folder of any size costs one
        SELECT (see docs/source.md, "Incremental rounds")."""
        client = self._need()
        if self._selected != folder or not self._fresh:
            # a fresh SELECT tells UIDNEXT and shows mail that arrived since the last one
            self._select(folder, force=True, readonly=self._selected == folder and
                         self._readonly)
        self._fresh = False
        low = _cursor_uid(cursor)
        top = self._uidnext - 1 if self._uidnext is not None else None
        if low is not None and top is not None and top <= low:
            return [], str(low)
        with self._errors("UID SEARCH"):
            uids = client.search(["UID", f"{low + 1}:*"]) if low else client.search("ALL")
        # "n:*" always matches the last message, even when its UID is below n (RFC 3501).
        uids = sorted(u for u in uids if u > (low or 0))
        refs: list[MessageRef] = []
        with self._errors("UID FETCH (RFC822.SIZE INTERNALDATE FLAGS)"):
            for _, item in self._bulk_fetch([(u, u, 0) for u in uids],
                                            b"(UID RFC822.SIZE INTERNALDATE FLAGS)"):
                refs.append(MessageRef(
                    folder=folder, folder_version=self._uidvalidity, id=str(item.uid),
                    size=item.size, internal_date=item.internal_date, flags=item.flags))
        reached = max([low or 0, top or 0, *uids[-1:]])
        # (a folder that never held a mail has no cursor: its rounds list it, which costs
        # nothing)
        return refs, (str(reached) if reached else cursor)

    def fetch(self, refs: Iterable[MessageRef], *, spool_dir: Path,
              inline_limit: int = 8 * 1024 * 1024, batch_size: int = 100
              ) -> Iterator[RawMessage]:
        """Raw messages in order (per folder, by UID); larger than ``inline_limit`` octets
        streamed straight to a file in ``spool_dir``. Pipelined: see imap_bulk.py."""
        for folder, group in _by_folder(refs).items():
            self._check_version(folder, group)
            wanted = sorted(((int(r.id), r, r.size or 50_000) for r in group),
                            key=lambda t: t[0])
            # the listing told size and date already (the usual case): the body alone
            known = all(r.internal_date is not None and r.size is not None for r in group)
            items = (b"(UID BODY.PEEK[])" if known
                     else b"(UID RFC822.SIZE INTERNALDATE BODY.PEEK[])")
            stream = self._bulk_fetch(
                wanted, items, body=True,
                spool_dir=spool_dir, inline_limit=inline_limit,
                max_mails=max(1, min(batch_size, COMMAND_MAX_MAILS)))
            try:
                while True:
                    with self._errors("UID FETCH BODY.PEEK[]"):
                        got = next(stream, None)
                    if got is None:
                        break
                    ref, item = got
                    if ref.internal_date is None or ref.size is None:
                        ref = replace(ref, internal_date=ref.internal_date or
                                      item.internal_date, size=item.size
                                      if ref.size is None else ref.size)
                    yield RawMessage(ref=ref, data=item.data, path=item.path)
            finally:
                stream.close()

    def _bulk_fetch(self, wanted: list[tuple[int, Any, int]], items: bytes, *,
                    body: bool = False, spool_dir: Path | None = None,
                    inline_limit: int = 0, max_mails: int = COMMAND_MAX_MAILS
                    ) -> Iterator[tuple[Any, Fetched]]:
        """Pipelined UID FETCH on the selected folder (see :mod:`imap_bulk`); yields
        ``(ref, Fetched)``. Other commands drain it first (:meth:`_need`)."""
        client = self._need()
        if not wanted:
            return
        imap = client._imap  # the imaplib object: its socket file and send() (see module doc)
        reader = ResponseReader(imap.file, imap.sock, imap.send)
        if hasattr(imap.sock, "bulk"):
            imap.sock.bulk = True   # a memory-BIO TLS socket: coalesce reads (tls_bio.py)
        bulk = BulkFetch(reader, chunks=plan(wanted, max_mails=max_mails), items=items,
                         body=body, spool_dir=spool_dir, inline_limit=inline_limit,
                         where=f"IMAP server {self.host}:{self.port}")
        self._bulk = bulk
        try:
            yield from bulk
        finally:
            self._bulk = None
            if hasattr(imap.sock, "bulk"):
                imap.sock.bulk = False
            try:
                bulk.close()
            except Exception:  # noqa: BLE001 - a broken session is found by the next command
                self._client = None

    # -- changing --------------------------------------------------------------------------

    def copy(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        """UID COPY to ``target_folder`` (created when missing)."""
        self._ensure_folder(target_folder)
        for folder, group in _by_folder(refs).items():
            uids = self._check_version(folder, group)
            with self._errors(f"COPY to {target_folder!r}"):
                self._need().copy(uids, self._wire(target_folder))

    def move(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        """UID MOVE where offered, else COPY + \\Deleted + UID EXPUNGE of just these."""
        self._ensure_folder(target_folder)
        client = self._need()
        for folder, group in _by_folder(refs).items():
            uids = self._check_version(folder, group)
            with self._errors(f"MOVE to {target_folder!r}"):
                target = self._wire(target_folder)
                if self.capabilities.move:
                    client.move(uids, target)
                else:
                    client.copy(uids, target)
                    self._expunge(uids)

    def delete(self, refs: Iterable[MessageRef]) -> None:
        """\\Deleted + UID EXPUNGE of just these messages."""
        for folder, group in _by_folder(refs).items():
            uids = self._check_version(folder, group)
            with self._errors("delete"):
                self._expunge(uids)

    def _expunge(self, uids: list[int]) -> None:
        client = self._need()
        client.add_flags(uids, [b"\\Deleted"], silent=True)
        if ImapCapability.UIDPLUS in self.capabilities.raw:
            client.uid_expunge(uids)
        else:
            # Without UIDPLUS a plain EXPUNGE also removes other \Deleted mail of the
            # folder; that is what the user's own client would do there too.
            client.expunge()

    def set_flags(self, refs: Iterable[MessageRef], flags: Iterable[str], *, add: bool = True
                  ) -> None:
        """Add (or remove) flags such as ``\\Seen``."""
        flags = [f.encode() if isinstance(f, str) else f for f in flags]
        client = self._need()
        for folder, group in _by_folder(refs).items():
            uids = self._check_version(folder, group)
            with self._errors("STORE FLAGS"):
                if add:
                    client.add_flags(uids, flags, silent=True)
                else:
                    client.remove_flags(uids, flags, silent=True)

    # -- waiting ----------------------------------------------------------------------------

    def wait_for_changes(self, folder: str, timeout: float) -> bool:
        """IDLE (renewed every ``idle_renew`` s) or NOOP polling; True when mail may be new."""
        client = self._need()
        resp = self._select(folder)
        deadline = time.monotonic() + timeout
        if not self.capabilities.idle:
            return self._poll(folder, deadline, int(resp.get(b"EXISTS", -1)) if resp else -1)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            renew_at = time.monotonic() + min(remaining, self._idle_renew)
            changed = False
            with self._errors("IDLE"):
                client.idle()
                try:
                    while not changed and (left := renew_at - time.monotonic()) > 0:
                        changed = any(_new_mail(r) for r in client.idle_check(timeout=left))
                finally:
                    _, rest = client.idle_done()
            if changed or any(_new_mail(r) for r in rest):
                return True

    def _poll(self, folder: str, deadline: float, exists: int) -> bool:
        client = self._need()
        while True:
            with self._errors("NOOP"):
                _, responses = client.noop()
            for r in responses:
                if len(r) >= 2 and r[1] == b"EXISTS" and (exists < 0 or r[0] > exists):
                    return True
                if len(r) >= 2 and r[1] == b"RECENT" and r[0] > 0:
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self._noop_poll, remaining))


def _new_mail(resp: Any) -> bool:
    if not (isinstance(resp, tuple) and len(resp) >= 2 and resp[1] in _NEW_MAIL):
        return False
    return resp[1] == b"EXISTS" or (isinstance(resp[0], int) and resp[0] > 0)
