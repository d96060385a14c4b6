"""The mail store behind the Graph test double: a stack user's Dovecot mailbox over IMAP.

Graph concepts are mapped onto IMAP like this (see docs/microsoft365.md):

* folder id = ``"AQMk"`` + base64url(IMAP folder name); well-known names map to the stack's
  special-use folders (inbox=INBOX, sentitems=Sent, deleteditems=Trash, junkemail=Junk,
  drafts=Drafts, archive=Archive), shown with Outlook's display names ("Sent Items" ...);
* message id = ``"AAMk"`` + base64url(folder, UIDVALIDITY, UID) when first seen. Like Graph's
  immutable ids, an id survives moves made *through the double*: the double remembers where
  the message went (from COPYUID). Moves made directly over IMAP yield a new id;
* delta rounds: see ``graph_double_delta.py``;
* hidden folders (IMAP names in ``hidden``) are listed only with ``includeHiddenFolders``;
  creating a folder that exists answers ``ErrorFolderExists`` with ``exists_status``: 400
  as users report it (Microsoft documents no status for it), 409 on request.

Each call logs in to Dovecot as the mailbox's user with its stack password. Errors are
raised as :class:`GraphFault` (HTTP status, Graph error code, message).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC
from email.parser import BytesHeaderParser
from typing import Any

from imapclient import IMAPClient

from postline.testing.info import StackInfo, password_for

WELL_KNOWN = {"inbox": "INBOX", "sentitems": "Sent", "deleteditems": "Trash",
              "junkemail": "Junk", "drafts": "Drafts", "archive": "Archive"}
DISPLAY = {"INBOX": "Inbox", "Sent": "Sent Items", "Trash": "Deleted Items",
           "Junk": "Junk Email"}
ROOT_ID = "AQMkROOT"
_FOLDER_PREFIX, _MSG_PREFIX = "AQMk", "AAMk"


class GraphFault(Exception):
    """A Graph error answer: HTTP ``status`` with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def not_found(what: str = "object") -> GraphFault:
    return GraphFault(404, "ErrorItemNotFound",
                      f"The specified {what} was not found in the store.")


def _b64e(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode().rstrip("=")


def _b64d(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")


def folder_id(name: str) -> str:
    """The double's Graph id of IMAP folder ``name``."""
    return _FOLDER_PREFIX + _b64e(name)


class MailboxStore:
    """IMAP-backed Graph operations; message-id memory shared by all users of the double."""

    def __init__(self, stack: StackInfo) -> None:
        self.stack = stack
        self.hidden: set[str] = set()      # IMAP names of hidden folders
        self.exists_status = 400
        self._lock = threading.Lock()
        self._where: dict[str, tuple[str, str, int]] = {}   # id -> (folder, uidvalidity, uid)
        self._alias: dict[tuple[str, str, str, int], str] = {}  # (user, folder, uv, uid) -> id

    # -- IMAP ---------------------------------------------------------------------------

    @contextmanager
    def imap(self, email: str) -> Iterator[IMAPClient]:
        c = IMAPClient(self.stack.host, port=self.stack.ports["imap"], ssl=False, timeout=30)
        try:
            c.login(email, password_for(email))
            yield c
        finally:
            with suppress(Exception):  # the double must answer even if logout fails
                c.logout()

    # -- folders ------------------------------------------------------------------------

    def imap_folder(self, c: IMAPClient, fid: str) -> str:
        """The IMAP folder for a Graph folder id or well-known name (GraphFault 404)."""
        name = WELL_KNOWN.get(fid.lower())
        if name is None:
            if not fid.startswith(_FOLDER_PREFIX):
                raise not_found("folder")
            try:
                name = _b64d(fid[len(_FOLDER_PREFIX):])
            except (ValueError, UnicodeDecodeError):
                raise not_found("folder") from None
        if not c.folder_exists(name):
            raise not_found("folder")
        return name

    def folder_json(self, c: IMAPClient, name: str) -> dict[str, Any]:
        st = c.folder_status(name, ["MESSAGES", "UNSEEN"])
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        leaf = name.rsplit("/", 1)[-1]
        return {"id": folder_id(name), "displayName": DISPLAY.get(name, leaf),
                "parentFolderId": folder_id(parent) if parent else ROOT_ID,
                "childFolderCount": len(c.list_folders(name + "/", "%")),
                "unreadItemCount": st[b"UNSEEN"], "totalItemCount": st[b"MESSAGES"],
                "isHidden": name in self.hidden}

    def children(self, c: IMAPClient, parent: str | None, *, hidden: bool = False
                 ) -> list[dict[str, Any]]:
        """Child folders; hidden ones only with ``hidden`` (``includeHiddenFolders=true``,
        https://learn.microsoft.com/en-us/graph/api/mailfolder-list-childfolders)."""
        pattern = (parent + "/%") if parent else "%"
        names = sorted(n for _, _, n in c.list_folders("", pattern)
                       if hidden or n not in self.hidden)
        return [self.folder_json(c, n) for n in names]

    def create_folder(self, c: IMAPClient, parent: str | None, display: str) -> dict[str, Any]:
        if not display or "/" in display:
            raise GraphFault(400, "ErrorInvalidRequest", "The folder name is not valid.")
        name = f"{parent}/{display}" if parent else display
        existing = {n.lower() for _, _, n in c.list_folders("", name)}
        if name.lower() in existing or any(
                DISPLAY.get(n, n).lower() == display.lower() and not parent
                for _, _, n in c.list_folders("", "%")):
            # users report 400 ErrorFolderExists (sometimes 409); the code is what counts
            raise GraphFault(self.exists_status, "ErrorFolderExists",
                             "A folder with the specified name already exists.")
        c.create_folder(name)
        c.subscribe_folder(name)
        return self.folder_json(c, name)

    # -- message ids ----------------------------------------------------------------------

    def message_id(self, user: str, folder: str, uv: str, uid: int) -> str:
        key = (user.lower(), folder, uv, uid)
        with self._lock:
            mid = self._alias.get(key)
            if mid is None:
                mid = _MSG_PREFIX + _b64e(json.dumps([user.lower(), folder, uv, uid]))
                self._alias[key] = mid
                self._where[mid] = (folder, uv, uid)
            return mid

    def locate(self, c: IMAPClient, user: str, mid: str) -> tuple[str, int]:
        """(IMAP folder, UID) of message ``mid``, the folder selected. GraphFault 404."""
        with self._lock:
            where = self._where.get(mid)
        if where is None and mid.startswith(_MSG_PREFIX):
            try:
                u, folder, uv, uid = json.loads(_b64d(mid[len(_MSG_PREFIX):]))
                where = (folder, uv, int(uid)) if u == user.lower() else None
            except (ValueError, UnicodeDecodeError, TypeError):
                where = None
        if where is None:
            raise not_found()
        folder, uv, uid = where
        if not c.folder_exists(folder):
            raise not_found()
        info = c.select_folder(folder)
        if str(info[b"UIDVALIDITY"]) != uv or not c.search(["UID", str(uid)]):
            raise not_found()
        return folder, uid

    def message_json(self, c: IMAPClient, user: str, folder: str, uv: str,
                     uids: list[int]) -> list[dict[str, Any]]:
        """Graph message resources for ``uids`` of the selected ``folder``, in UID order."""
        if not uids:
            return []
        data = c.fetch(uids, ["FLAGS", "INTERNALDATE",
                              "BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)]"])
        out = []
        for uid in sorted(data):
            d = data[uid]
            head = BytesHeaderParser().parsebytes(
                d.get(b"BODY[HEADER.FIELDS (SUBJECT MESSAGE-ID)]", b""))
            when = d[b"INTERNALDATE"]
            if when.tzinfo is None:
                when = when.astimezone()
            flags = {f.decode().lower() if isinstance(f, bytes) else str(f).lower()
                     for f in d[b"FLAGS"]}
            out.append({
                "id": self.message_id(user, folder, uv, uid),
                "receivedDateTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "subject": str(head.get("Subject", "")),
                "internetMessageId": str(head.get("Message-ID", "")),
                "isRead": "\\seen" in flags, "parentFolderId": folder_id(folder),
                "flag": {"flagStatus": "flagged" if "\\flagged" in flags else "notFlagged"}})
        return out

    def moved(self, user: str, mid: str, folder: str, uv: str, uid: int,
              keep_id: bool) -> str:
        """Record that ``mid`` now lives at (folder, uv, uid); returns its id there."""
        if not keep_id:
            return self.message_id(user, folder, uv, uid)
        with self._lock:
            self._where[mid] = (folder, uv, uid)
            self._alias[(user.lower(), folder, uv, uid)] = mid
        return mid


def copy_uid(response: bytes | str) -> int | None:
    """The destination UID in a ``[COPYUID uv src dst]`` response code (UIDPLUS)."""
    text = response.decode() if isinstance(response, bytes) else str(response)
    m = re.search(r"COPYUID \d+ \S+ (\d+)", text)
    return int(m.group(1)) if m else None
