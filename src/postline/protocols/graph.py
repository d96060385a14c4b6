"""Microsoft 365 through Microsoft Graph: a :class:`MailboxReader` (this module) and a
:class:`MailSender` (``graph_send.py``) over one :class:`~.graph_http.GraphSession`.

Identity (see ``base.py``): ``folder_version`` is the Graph folder id, a message's ``id`` its
*immutable* id (every request says ``Prefer: IdType="ImmutableId"``), so a message keeps its
id when it is moved to the done folder. A cursor is the folder's ``@odata.deltaLink``.

Folders are named like IMAP paths: a well-known name (``inbox``, ``archive``,
``deleteditems``, ``sentitems``, ``junkemail``, ``drafts``; any case, so ``INBOX`` works) or
display names separated by ``/`` (``Archive/Done``); targets of move/copy are created on
demand. Graph has no push for a plain client, so :meth:`GraphReader.wait_for_changes` polls
the delta query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from postline.errors import ConfigError, ConnectError, PostlineError
from postline.protocols.base import (
    Capabilities,
    FolderInfo,
    FolderState,
    MailboxReader,
    MessageRef,
    RawMessage,
)
from postline.protocols.graph_folders import (  # noqa: F401 - split_path re-exported
    FOLDER_FIELDS,
    FolderDirectory,
    q,
    split_path,
)
from postline.protocols.graph_http import (
    GraphSession,
    access_error,
    describe,
    mailbox_unusable,
    sync_state_lost,
    unexpected,
)
from postline.protocols.graph_login import (  # noqa: F401 - re-exported
    GRAPH_DIRECTION,
    graph_provider,
    graph_session,
    login,
    warn_delegation,
)
from postline.protocols.spool import open_spool
from postline.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.graph")

DELTA_SELECT = "id,receivedDateTime,isRead,flag,subject,internetMessageId,parentFolderId"
DELTA_PAGE_SIZE = 100
POLL_SECONDS = 10.0
# permanentDelete exists in the global service only
# (https://learn.microsoft.com/en-us/graph/api/message-permanentdelete: national cloud table)
NATIONAL_CLOUD_HOSTS = ("graph.microsoft.us", "dod-graph.microsoft.us",
                        "microsoftgraph.chinacloudapi.cn", "graph.microsoft.de")


def permanent_delete_supported(graph_url: str) -> bool:
    """Whether ``permanentDelete`` exists on this Graph (the global service, or anything
    that is not a known national cloud, such as the test double)."""
    host = (urlsplit(graph_url).hostname or "").lower()
    return host not in NATIONAL_CLOUD_HOSTS


def ref_of(item: dict[str, Any], *, folder: str, folder_id: str) -> MessageRef:
    """A MessageRef from one item of a delta page."""
    flags: list[str] = []
    if item.get("isRead"):
        flags.append("\\Seen")
    if (item.get("flag") or {}).get("flagStatus") == "flagged":
        flags.append("\\Flagged")
    return MessageRef(folder=folder, folder_version=folder_id, id=str(item["id"]),
                      internal_date=item.get("receivedDateTime"), flags=tuple(flags))


def flag_patch(flags: Iterable[str], add: bool) -> dict[str, Any]:
    """The PATCH body for IMAP-style flags; flags Graph has no property for are left out."""
    body: dict[str, Any] = {}
    for f in flags:
        name = f.lower()
        if name == "\\seen":
            body["isRead"] = add
        elif name == "\\flagged":
            body["flag"] = {"flagStatus": "flagged" if add else "notFlagged"}
    return body


def merge_delta(refs: dict[str, MessageRef], removed: set[str], page: dict[str, Any], *,
                folder: str, folder_id: str) -> None:
    """Fold one delta page into ``refs`` (id -> latest ref) and ``removed`` (ids).

    Delta reports created *and* updated messages (a flag change is an update), may report
    one message more than once, and marks deletions and moves out with ``@removed``
    (https://learn.microsoft.com/en-us/graph/delta-query-messages); the order is not
    guaranteed. The latest state of an id wins, and an id reported present in the round
    stays listed even when it is also reported removed (moved out and back, or in either
    order): listing a mail that is gone only costs a 404 when it is fetched, dropping one
    that is there would lose it."""
    for item in page.get("value", []):
        mid = item.get("id")
        if not mid:
            continue
        if "@removed" in item:
            if str(mid) not in refs:
                removed.add(str(mid))
        else:
            removed.discard(str(mid))
            refs[str(mid)] = ref_of(item, folder=folder, folder_id=folder_id)


class GraphReader(MailboxReader):
    """:class:`MailboxReader` for one mailbox over Microsoft Graph.

    Methods raise ConnectError (network, throttled too long, 5xx), TokenError/AuthError
    (token refused, permission missing), ConfigError (mailbox or folder not found, the
    mailbox not usable through Graph).
    """

    def __init__(self, *, session: GraphSession, trace: Trace = NULL_TRACE,
                 poll_interval: float = POLL_SECONDS) -> None:
        self._s = session
        self._trace = trace
        self._poll = poll_interval
        self.mailbox = session.mailbox or "/me"
        self._folders = FolderDirectory(session=session, mailbox=self.mailbox,
                                        error=self._error)
        self._watch: dict[str, str] = {}        # folder -> delta link for wait_for_changes
        self.capabilities = Capabilities(folders=True, move=True, idle=False, flags=True,
                                         raw=("GRAPH", "DELTA", "IMMUTABLE-ID"),
                                         cursor=True, delta=True, stable_ids=True)

    # -- connecting ---------------------------------------------------------------------

    def connect(self) -> None:
        with self._trace.step("token") as st:
            self._s.token()
            st.detail = f"access token from {self._s.token_source}"
        with self._trace.step("mailbox") as st:
            # The Inbox, not /users/{id}: reading a user object needs User.Read.All, which a
            # mail-only app registration does not have.
            folder = self._get("/mailFolders/inbox?$select=" + FOLDER_FIELDS, "the Inbox")
            self._folders.remember("inbox", folder["id"])
            st.detail = (f"{self.mailbox} via {self._s.base_url}: Inbox has "
                         f"{folder.get('totalItemCount', '?')} message(s)")

    def close(self) -> None:
        self._s.close()

    # -- helpers --------------------------------------------------------------------------

    def _get(self, path: str, what: str) -> dict[str, Any]:
        resp = self._s.request("GET", path, what=f"reading {what}")
        if resp.status_code == 200:
            return resp.json()
        raise self._error(resp, f"reading {what}")

    def _error(self, resp: Any, what: str) -> PostlineError:
        if resp.status_code == 403:
            return access_error(resp, what, self._s.mailbox)
        if mailbox_unusable(resp):
            # by error.code (https://learn.microsoft.com/en-us/graph/errors): the same advice
            # whichever of the three Exchange chose to answer
            return ConfigError(f"Microsoft Graph cannot use mailbox {self.mailbox}: it does "
                               f"not exist, is not licensed or is on-premises ({what} "
                               f"answered {describe(resp)})",
                               hint="check microsoft365.mailbox: a user or shared mailbox "
                                    "with an Exchange Online license")
        return unexpected(resp, what)

    def folder_id(self, folder: str, *, create: bool = False) -> str:
        """The Graph id of ``folder`` (see ``graph_folders.py`` for names). Raises
        ConfigError when it does not exist and ``create`` is false."""
        return self._folders.folder_id(folder, create=create)

    def _each(self, refs: Iterable[MessageRef], call: Callable[[MessageRef], None]) -> None:
        """``call`` for every ref, up to the app's concurrency limit at once."""
        refs = list(refs)
        if len(refs) <= 1:
            for r in refs:
                call(r)
            return
        with ThreadPoolExecutor(max_workers=self._s.max_concurrent) as pool:
            for f in [pool.submit(call, r) for r in refs]:
                f.result()  # the first failure propagates

    # -- MailboxReader ----------------------------------------------------------------------

    def list_folders(self) -> list[FolderInfo]:
        return self._folders.list_all()

    def open_folder(self, folder: str, *, readonly: bool = False) -> FolderState:
        # listing and downloading are GETs: read-only either way
        fid = self.folder_id(folder)
        data = self._get(f"/mailFolders/{q(fid)}?$select={FOLDER_FIELDS}", f"folder {folder!r}")
        return FolderState(name=folder, folder_version=fid,
                           exists=int(data.get("totalItemCount") or 0))

    def _delta(self, link: str, folder: str, fid: str) -> tuple[list[MessageRef], str | None]:
        """Follow ``link`` through its pages: the created/changed messages (each once, in
        its last state) and the delta link. Raises _SyncReset when Graph no longer knows
        the sync state, on any page."""
        refs: dict[str, MessageRef] = {}
        removed: set[str] = set()
        url: str | None = link
        while url:
            resp = self._s.request("GET", url, what=f"listing folder {folder!r}",
                                   headers={"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"})
            if sync_state_lost(resp):
                raise _SyncReset(describe(resp))
            if resp.status_code != 200:
                raise self._error(resp, f"listing folder {folder!r}")
            page = resp.json()
            # an empty page with a nextLink is normal: keep following it
            merge_delta(refs, removed, page, folder=folder, folder_id=fid)
            if "@odata.deltaLink" in page:
                return list(refs.values()), page["@odata.deltaLink"]
            url = page.get("@odata.nextLink")
        return list(refs.values()), None

    def list_messages(self, folder: str, *, cursor: str | None = None
                      ) -> tuple[list[MessageRef], str | None]:
        """Without ``cursor``: every message of the folder. With one (a delta link of an
        earlier call): what was created or changed since, known mails included; a lost
        sync state starts a full listing once. Oldest first; returns the next cursor."""
        fid = self.folder_id(folder)
        # never $deltatoken=latest: it is documented for directory and drive resources, and
        # users report it returns the whole folder for messages (microsoftgraph/
        # microsoft-graph-docs#9569); a baseline is a full round
        start = f"/mailFolders/{q(fid)}/messages/delta?$select={DELTA_SELECT}"
        if cursor and not cursor.startswith(self._s.base_url + "/"):
            log.warning("ignoring a cursor that is not a delta link of %s", self._s.base_url)
            cursor = None
        try:
            refs, link = self._delta(cursor or start, folder, fid)
        except _SyncReset as lost:
            log.warning("Graph no longer knows the delta state of folder %r (%s); listing "
                        "it again from the start", folder, lost)
            try:
                refs, link = self._delta(start, folder, fid)
            except _SyncReset as again:
                raise ConnectError(f"Microsoft Graph lost the sync state of folder {folder!r} "
                                   f"twice in a row ({again})",
                                   hint="it will be tried again on the next round") from None
        if link:
            self._watch[folder] = link
        # delta order is unspecified: oldest first by received time (stable for equal times)
        refs.sort(key=lambda r: r.internal_date or "")
        return refs, link

    def fetch(self, refs: Iterable[MessageRef], *, spool_dir: Path,
              inline_limit: int = 8 * 1024 * 1024, batch_size: int = 100
              ) -> Iterator[RawMessage]:
        for ref in refs:
            raw = self._fetch_one(ref, spool_dir, inline_limit)
            if raw is not None:
                yield raw

    def _fetch_one(self, ref: MessageRef, spool_dir: Path, limit: int) -> RawMessage | None:
        what = f"downloading message {ref.id[-16:]}"
        buf = bytearray()
        out, path = None, None
        try:
            # $value is MIME, not JSON: the SDKs ask for application/octet-stream; */* takes
            # whatever type Exchange labels it with
            with self._s.stream("GET", f"/messages/{q(ref.id)}/$value", what=what,
                                headers={"Accept": "*/*"}) as resp:
                if resp.status_code == 404 and not mailbox_unusable(resp):
                    log.info("message %s vanished from %s before it was fetched", ref.id,
                             ref.folder)
                    return None
                if resp.status_code != 200:
                    raise self._error(resp, what)
                for chunk in resp.iter_bytes():
                    if out is None and len(buf) + len(chunk) > limit:
                        out, path = open_spool(spool_dir, ref.id[-24:])
                        out.write(buf)
                        buf = bytearray()
                    if out is not None:
                        out.write(chunk)
                    else:
                        buf += chunk
        except BaseException:
            if out is not None:
                out.close()
                assert path is not None
                path.unlink(missing_ok=True)
            raise
        if out is not None:
            out.close()
            return RawMessage(ref=ref, path=path)
        return RawMessage(ref=ref, data=bytes(buf))

    def _action(self, ref: MessageRef, method: str, suffix: str, body: Any, what: str
                ) -> bool:
        """One request on a message; False when Graph answered 404 (not found)."""
        resp = self._s.request(method, f"/messages/{q(ref.id)}{suffix}", json_body=body,
                               what=what)
        if resp.status_code == 404 and not mailbox_unusable(resp):
            return False
        if resp.status_code >= 300:
            raise self._error(resp, what)
        return True

    def _transfer(self, refs: Iterable[MessageRef], target_folder: str, verb: str) -> None:
        refs = list(refs)
        if not refs:
            return
        what = f"{'moving' if verb == 'move' else 'copying'} a message to {target_folder!r}"
        tid = self.folder_id(target_folder, create=True)
        missed: list[MessageRef] = []

        def one(r: MessageRef) -> None:
            if not self._action(r, "POST", f"/{verb}", {"destinationId": tid}, what):
                missed.append(r)

        self._each(refs, one)
        if not missed:
            return
        # A 404 names no culprit: the mail or the destination folder (deleted since its id
        # was cached). Check the folder before calling the mails vanished.
        if self._folders.exists(tid):
            for r in missed:
                log.info("message %s vanished from %s before %s", r.id, r.folder, what)
            return
        log.warning("folder %r was deleted or renamed meanwhile; finding or creating it "
                    "again", target_folder)
        self._folders.forget(tid)
        tid = self.folder_id(target_folder, create=True)
        for r in missed:
            if not self._action(r, "POST", f"/{verb}", {"destinationId": tid}, what):
                log.info("message %s vanished from %s before %s", r.id, r.folder, what)

    def move(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        self._transfer(refs, target_folder, "move")

    def copy(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        self._transfer(refs, target_folder, "copy")

    def delete(self, refs: Iterable[MessageRef]) -> None:
        # permanentDelete: a plain DELETE only moves the message to Deleted Items. National
        # clouds lack it: there the mail goes to Deleted Items, the most Graph offers.
        if not permanent_delete_supported(self._s.base_url):
            self._transfer(refs, "deleteditems", "move")
            return
        self._each(refs, lambda r: self._note_gone(
            r, self._action(r, "POST", "/permanentDelete", None, "deleting a message"),
            "deleting it"))

    @staticmethod
    def _note_gone(ref: MessageRef, found: bool, what: str) -> None:
        if not found:
            log.info("message %s vanished from %s before %s", ref.id, ref.folder, what)

    def set_flags(self, refs: Iterable[MessageRef], flags: Iterable[str], *, add: bool = True
                  ) -> None:
        body = flag_patch(flags, add)
        if not body:
            return
        self._each(refs, lambda r: self._note_gone(
            r, self._action(r, "PATCH", "", body, "setting flags"), "setting flags"))

    def wait_for_changes(self, folder: str, timeout: float) -> bool:
        fid = self.folder_id(folder)
        deadline = time.monotonic() + timeout
        try:
            link = self._watch.get(folder)
            if not link:  # a baseline: one full round (there is no "latest" for messages)
                _, link = self._delta(f"/mailFolders/{q(fid)}/messages/delta?$select=id",
                                      folder, fid)
            while True:
                changed, nxt = self._delta(link, folder, fid) if link else ([], None)
                link = nxt or link
                self._watch[folder] = link or ""
                if changed:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(self._poll, left))
        except _SyncReset:
            self._watch.pop(folder, None)
            return True


class _SyncReset(Exception):
    """Graph no longer knows a delta link's sync state: start the delta over."""
