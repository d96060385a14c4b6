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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from postline.errors import ConfigError, ConnectError, LoginRequired, PostlineError
from postline.protocols.base import (
    Capabilities,
    FolderInfo,
    FolderState,
    MailboxReader,
    MessageRef,
    RawMessage,
)
from postline.protocols.graph_http import (
    MAX_CONCURRENT_PER_MAILBOX,
    GraphSession,
    access_error,
    unexpected,
)
from postline.protocols.spool import open_spool
from postline.protocols.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.graph")

GRAPH_DIRECTION = "microsoft365"   # the token cache name of Graph logins (one for both uses)
WELL_KNOWN = ("inbox", "archive", "deleteditems", "sentitems", "junkemail", "drafts")
DELTA_SELECT = "id,receivedDateTime,isRead,flag,subject,internetMessageId,parentFolderId"
DELTA_PAGE_SIZE = 100
POLL_SECONDS = 10.0
_FOLDER_FIELDS = "id,displayName,parentFolderId,childFolderCount,totalItemCount"


def q(value: str) -> str:
    """A Graph id or name quoted for a URL path segment."""
    return quote(value, safe="")


def graph_provider(project: Any, conn: Any) -> Any:
    """The process-wide token provider of a microsoft365 connection (MSAL, see
    ``postline.auth.oauth``); device-flow tokens are cached under the name ``microsoft365``.
    Raises SecretError when the client secret cannot be read."""
    from postline.auth.oauth import provider_for

    m = conn.microsoft365
    return provider_for(project, connection=conn.name, direction=GRAPH_DIRECTION,
                        credential=m.credential, ca_file=m.ca_file,
                        verify=m.check_server_identity, timeout=m.connect_timeout)


class _SavedLoginFirst:
    """A device-flow provider that says "run postline login" before it builds an MSAL app:
    building one for a Microsoft authority already talks to the network."""

    def __init__(self, provider: Any, *, path: Path, connection: str, root: Any) -> None:
        self._provider, self._path = provider, path
        self._connection, self._root = connection, root or "PROJECT"

    def token(self, *, force_refresh: bool = False) -> str:
        if not self._path.exists():
            raise LoginRequired(f"no saved login for connection {self._connection!r} "
                                "(microsoft365)", hint=f"run 'postline login {self._root} "
                                f"{self._connection}' first")
        return self._provider.token(force_refresh=force_refresh)

    @property
    def description(self) -> str:
        return self._provider.description


def login(project: Any, conn: Any, show: Callable[[dict], None]) -> tuple[str, Path]:
    """Run the device flow for a microsoft365 connection (what ``postline login`` does):
    ``show(flow)`` displays link and code. Returns the account name and the sealed token
    cache's path. Raises ConfigError for client credentials, TokenError."""
    from postline.auth.oauth import forget_providers
    from postline.auth.token_cache import cache_path

    if conn.microsoft365.credential.type != "oauth_device_flow":
        raise ConfigError(f"connection {conn.name!r} uses client credentials",
                          hint="only device-flow credentials need 'postline login'")
    forget_providers()
    account = graph_provider(project, conn).login(show)
    forget_providers()
    return account, cache_path(project.state_dir, conn.name, GRAPH_DIRECTION)


def graph_session(project: Any, conn: Any, *, trace: Trace = NULL_TRACE) -> GraphSession:
    """A :class:`GraphSession` for the connection's mailbox (``/me`` without one)."""
    from postline.auth.token_cache import cache_path

    m = conn.microsoft365
    provider = graph_provider(project, conn)
    if m.credential.type == "oauth_device_flow":
        provider = _SavedLoginFirst(
            provider, path=cache_path(project.state_dir, conn.name, GRAPH_DIRECTION),
            connection=conn.name, root=getattr(project, "root", None))
    return GraphSession(graph_url=m.graph_url, mailbox=m.mailbox,
                        provider=provider, ca_file=m.ca_file,
                        verify=m.check_server_identity, connect_timeout=m.connect_timeout,
                        read_timeout=m.read_timeout, trace=trace)


def split_path(folder: str) -> list[str]:
    """``"Archive/Done"`` -> ``["Archive", "Done"]``. Raises ConfigError for an empty part."""
    parts = [p.strip() for p in folder.strip().strip("/").split("/")]
    if not folder.strip() or any(not p for p in parts):
        raise ConfigError(f"folder name {folder!r} is empty or has an empty part",
                          hint="use a well-known name such as inbox or a path like Archive/Done")
    return parts


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


class GraphReader(MailboxReader):
    """:class:`MailboxReader` for one mailbox over Microsoft Graph.

    Methods raise ConnectError (network, throttled too long, 5xx), TokenError/AuthError
    (token refused, permission missing), ConfigError (mailbox or folder not found).
    """

    def __init__(self, *, session: GraphSession, trace: Trace = NULL_TRACE,
                 poll_interval: float = POLL_SECONDS) -> None:
        self._s = session
        self._trace = trace
        self._poll = poll_interval
        self._ids: dict[str, str] = {}          # lower-cased folder path -> folder id
        self._ids_lock = threading.Lock()
        self._watch: dict[str, str] = {}        # folder -> delta link for wait_for_changes
        self.capabilities = Capabilities(folders=True, move=True, idle=False, flags=True,
                                         raw=("GRAPH", "DELTA", "IMMUTABLE-ID"))
        self.mailbox = session.mailbox or "/me"

    # -- connecting ---------------------------------------------------------------------

    def connect(self) -> None:
        with self._trace.step("token") as st:
            self._s.token()
            st.detail = f"access token from {self._s.token_source}"
        with self._trace.step("mailbox") as st:
            # The Inbox, not /users/{id}: reading a user object needs User.Read.All, which a
            # mail-only app registration does not have.
            folder = self._get("/mailFolders/inbox?$select=" + _FOLDER_FIELDS, "the Inbox")
            self._ids["inbox"] = folder["id"]
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
        if resp.status_code == 404 and "mailbox" in resp.text.lower() or \
                resp.status_code == 404 and "ErrorInvalidUser" in resp.text:
            return ConfigError(f"Microsoft Graph has no mailbox {self.mailbox} "
                               f"({what} answered 404)",
                               hint="check microsoft365.mailbox (a user with an Exchange "
                                    "Online mailbox)")
        return unexpected(resp, what)

    def _pages(self, path: str, what: str) -> Iterator[dict[str, Any]]:
        url: str | None = path
        while url:
            page = self._get(url, what)
            yield from page.get("value", [])
            url = page.get("@odata.nextLink")

    def _children(self, parent_id: str | None) -> list[dict[str, Any]]:
        base = f"/mailFolders/{q(parent_id)}/childFolders" if parent_id else "/mailFolders"
        return list(self._pages(f"{base}?$top=100&$select={_FOLDER_FIELDS}", "folders"))

    def _create(self, parent_id: str | None, name: str) -> str:
        base = f"/mailFolders/{q(parent_id)}/childFolders" if parent_id else "/mailFolders"
        resp = self._s.request("POST", base, json_body={"displayName": name},
                               what=f"creating folder {name!r}")
        if resp.status_code in (200, 201):
            log.info("created folder %r in mailbox %s", name, self.mailbox)
            return resp.json()["id"]
        if resp.status_code == 409:  # created meanwhile by someone else
            found = [f for f in self._children(parent_id)
                     if f.get("displayName", "").lower() == name.lower()]
            if found:
                return found[0]["id"]
        raise self._error(resp, f"creating folder {name!r}")

    def folder_id(self, folder: str, *, create: bool = False) -> str:
        """The Graph id of ``folder`` (see the module docstring for names).

        Raises ConfigError when it does not exist and ``create`` is false."""
        parts = split_path(folder)
        key = "/".join(parts).lower()
        with self._ids_lock:
            if key in self._ids:
                return self._ids[key]
        parent: str | None = None
        for i, name in enumerate(parts):
            sub = "/".join(parts[: i + 1]).lower()
            known = self._ids.get(sub)
            if known:
                parent = known
                continue
            found = None
            if i == 0 and name.lower() in WELL_KNOWN:
                resp = self._s.request("GET", f"/mailFolders/{name.lower()}?$select=id",
                                       what=f"reading folder {name!r}")
                if resp.status_code == 200:
                    found = resp.json()["id"]
                elif resp.status_code != 404:
                    raise self._error(resp, f"reading folder {name!r}")
            if found is None:
                match = [f for f in self._children(parent)
                         if f.get("displayName", "").lower() == name.lower()]
                found = match[0]["id"] if match else None
            if found is None:
                if not create:
                    raise ConfigError(f"mailbox {self.mailbox} has no folder {folder!r} "
                                      f"(no {name!r} in {'/'.join(parts[:i]) or 'the top'})",
                                      hint="check the folder name; well-known names are "
                                           + ", ".join(WELL_KNOWN))
                found = self._create(parent, name)
            with self._ids_lock:
                self._ids[sub] = found
            parent = found
        assert parent is not None
        return parent

    def _each(self, refs: Iterable[MessageRef], call: Callable[[MessageRef], None]) -> None:
        """``call`` for every ref, up to the mailbox's concurrency limit at once."""
        refs = list(refs)
        if len(refs) <= 1:
            for r in refs:
                call(r)
            return
        with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_PER_MAILBOX) as pool:
            for f in [pool.submit(call, r) for r in refs]:
                f.result()  # the first failure propagates

    # -- MailboxReader ----------------------------------------------------------------------

    def list_folders(self) -> list[FolderInfo]:
        out: list[FolderInfo] = []
        todo: list[tuple[str | None, str]] = [(None, "")]
        while todo:
            parent, prefix = todo.pop(0)
            for f in self._children(parent):
                name = prefix + f.get("displayName", "")
                with self._ids_lock:
                    self._ids.setdefault(name.lower(), f["id"])
                out.append(FolderInfo(name=name, delimiter="/"))
                if f.get("childFolderCount"):
                    todo.append((f["id"], name + "/"))
        return out

    def open_folder(self, folder: str, *, readonly: bool = False) -> FolderState:
        # listing and downloading are GETs: read-only either way
        fid = self.folder_id(folder)
        data = self._get(f"/mailFolders/{q(fid)}?$select={_FOLDER_FIELDS}", f"folder {folder!r}")
        return FolderState(name=folder, folder_version=fid,
                           exists=int(data.get("totalItemCount") or 0))

    def _delta(self, link: str, folder: str, fid: str) -> tuple[list[MessageRef], str | None]:
        """Follow ``link`` through its pages: the new/changed messages and the delta link.
        Raises _SyncReset when Graph no longer knows the sync state (410)."""
        refs: list[MessageRef] = []
        url: str | None = link
        while url:
            resp = self._s.request("GET", url, what=f"listing folder {folder!r}",
                                   headers={"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"})
            if resp.status_code == 410:
                raise _SyncReset()
            if resp.status_code != 200:
                raise self._error(resp, f"listing folder {folder!r}")
            page = resp.json()
            for item in page.get("value", []):
                if "@removed" not in item and "id" in item:
                    refs.append(ref_of(item, folder=folder, folder_id=fid))
            if "@odata.deltaLink" in page:
                return refs, page["@odata.deltaLink"]
            url = page.get("@odata.nextLink")
        return refs, None

    def list_messages(self, folder: str, *, cursor: str | None = None
                      ) -> tuple[list[MessageRef], str | None]:
        fid = self.folder_id(folder)
        start = f"/mailFolders/{q(fid)}/messages/delta?$select={DELTA_SELECT}"
        if cursor and not cursor.startswith(self._s.base_url + "/"):
            log.warning("ignoring a cursor that is not a delta link of %s", self._s.base_url)
            cursor = None
        try:
            refs, link = self._delta(cursor or start, folder, fid)
        except _SyncReset:
            if not cursor:
                raise ConnectError(f"Microsoft Graph lost the sync state of folder {folder!r}"
                                   ) from None
            log.warning("Graph no longer knows the delta state of %r; listing it again", folder)
            refs, link = self._delta(start, folder, fid)
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
            with self._s.stream("GET", f"/messages/{q(ref.id)}/$value", what=what) as resp:
                if resp.status_code == 404:
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

    def _action(self, ref: MessageRef, method: str, suffix: str, body: Any, what: str) -> None:
        resp = self._s.request(method, f"/messages/{q(ref.id)}{suffix}", json_body=body,
                               what=what)
        if resp.status_code == 404:
            log.info("message %s vanished from %s before %s", ref.id, ref.folder, what)
        elif resp.status_code >= 300:
            raise self._error(resp, what)

    def move(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        refs = list(refs)
        if not refs:
            return
        tid = self.folder_id(target_folder, create=True)
        self._each(refs, lambda r: self._action(r, "POST", "/move", {"destinationId": tid},
                                                f"moving a message to {target_folder!r}"))

    def copy(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        refs = list(refs)
        if not refs:
            return
        tid = self.folder_id(target_folder, create=True)
        self._each(refs, lambda r: self._action(r, "POST", "/copy", {"destinationId": tid},
                                                f"copying a message to {target_folder!r}"))

    def delete(self, refs: Iterable[MessageRef]) -> None:
        # permanentDelete: a plain DELETE only moves the message to Deleted Items.
        self._each(refs, lambda r: self._action(r, "POST", "/permanentDelete", None,
                                                "deleting a message"))

    def set_flags(self, refs: Iterable[MessageRef], flags: Iterable[str], *, add: bool = True
                  ) -> None:
        body = flag_patch(flags, add)
        if not body:
            return
        self._each(refs, lambda r: self._action(r, "PATCH", "", body, "setting flags"))

    def wait_for_changes(self, folder: str, timeout: float) -> bool:
        fid = self.folder_id(folder)
        deadline = time.monotonic() + timeout
        link = self._watch.get(folder)
        try:
            if link is None:  # a baseline without listing the folder
                _, link = self._delta(f"/mailFolders/{q(fid)}/messages/delta"
                                      f"?$select=id&$deltatoken=latest", folder, fid)
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
    """Graph answered 410 Gone to a delta link: start the delta over."""
