"""Mail folders over Microsoft Graph: names like IMAP paths resolved to Graph folder ids.

A folder is named by a well-known name (``inbox``, ``archive``, ``deleteditems``,
``sentitems``, ``junkemail``, ``drafts``; any case) or by display names separated by ``/``
(``Archive/Done``). Ids are cached per reader; :meth:`FolderDirectory.forget` drops one
that turned out stale (a folder deleted or renamed meanwhile).

Creating a folder that exists is answered with ``ErrorFolderExists``: users report HTTP 400
(sometimes 409), and the folder may be *hidden*, which a plain listing leaves out
(https://learn.microsoft.com/en-us/graph/api/mailfolder-list-childfolders: "By default,
this operation does not return hidden folders. Use a query parameter includeHiddenFolders").
So a create that finds the folder exists lists again with ``includeHiddenFolders=true``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from postline.errors import ConfigError, PostlineError
from postline.protocols.base import FolderInfo
from postline.protocols.graph_http import GraphSession, error_code

log = logging.getLogger("postline.graph")

WELL_KNOWN = ("inbox", "archive", "deleteditems", "sentitems", "junkemail", "drafts")
FOLDER_FIELDS = "id,displayName,parentFolderId,childFolderCount,totalItemCount"


def q(value: str) -> str:
    """A Graph id or name quoted for a URL path segment."""
    return quote(value, safe="")


def split_path(folder: str) -> list[str]:
    """``"Archive/Done"`` -> ``["Archive", "Done"]``. Raises ConfigError for an empty part."""
    parts = [p.strip() for p in folder.strip().strip("/").split("/")]
    if not folder.strip() or any(not p for p in parts):
        raise ConfigError(f"folder name {folder!r} is empty or has an empty part",
                          hint="use a well-known name such as inbox or a path like Archive/Done")
    return parts


def folder_exists_answer(resp: Any) -> bool:
    """Whether a create answer says the folder is there already: ``ErrorFolderExists`` (400
    as users report it, or 409), or a bare 409 Conflict."""
    return resp.status_code in (400, 409) and (
        error_code(resp) == "errorfolderexists" or resp.status_code == 409)


class FolderDirectory:
    """Folder ids of one mailbox. ``error`` turns an unexpected answer into a postline
    error; methods raise ConfigError (no such folder) and what ``error`` returns."""

    def __init__(self, *, session: GraphSession, mailbox: str,
                 error: Callable[[Any, str], PostlineError]) -> None:
        self._s = session
        self._mailbox = mailbox
        self._error = error
        self._ids: dict[str, str] = {}          # lower-cased folder path -> folder id
        self._lock = threading.Lock()

    def remember(self, path: str, fid: str) -> None:
        with self._lock:
            self._ids.setdefault(path.lower(), fid)

    def forget(self, fid: str) -> None:
        """Drop every cached path that resolved to ``fid`` (and the paths below them)."""
        with self._lock:
            stale = [k for k, v in self._ids.items() if v == fid]
            for k in list(self._ids):
                if k in stale or any(k.startswith(s + "/") for s in stale):
                    del self._ids[k]

    def _get(self, path: str, what: str) -> dict[str, Any]:
        resp = self._s.request("GET", path, what=f"reading {what}")
        if resp.status_code == 200:
            return resp.json()
        raise self._error(resp, f"reading {what}")

    def _pages(self, path: str, what: str) -> Iterator[dict[str, Any]]:
        url: str | None = path
        while url:
            page = self._get(url, what)
            yield from page.get("value", [])
            url = page.get("@odata.nextLink")

    def children(self, parent_id: str | None, *, hidden: bool = False) -> list[dict[str, Any]]:
        """The folders directly under ``parent_id`` (the top without one); ``hidden``
        includes hidden ones."""
        base = f"/mailFolders/{q(parent_id)}/childFolders" if parent_id else "/mailFolders"
        extra = "&includeHiddenFolders=true" if hidden else ""
        return list(self._pages(f"{base}?$top=100&$select={FOLDER_FIELDS}{extra}", "folders"))

    def _named(self, parent_id: str | None, name: str, *, hidden: bool = False) -> str | None:
        match = [f for f in self.children(parent_id, hidden=hidden)
                 if f.get("displayName", "").lower() == name.lower()]
        return match[0]["id"] if match else None

    def create(self, parent_id: str | None, name: str) -> str:
        """Create folder ``name`` under ``parent_id`` and return its id; a folder that
        exists already (made meanwhile, or hidden) is found and returned instead."""
        base = f"/mailFolders/{q(parent_id)}/childFolders" if parent_id else "/mailFolders"
        resp = self._s.request("POST", base, json_body={"displayName": name},
                               what=f"creating folder {name!r}")
        if resp.status_code in (200, 201):
            log.info("created folder %r in mailbox %s", name, self._mailbox)
            return resp.json()["id"]
        if folder_exists_answer(resp):
            found = self._named(parent_id, name, hidden=True)
            if found:
                return found
        raise self._error(resp, f"creating folder {name!r}")

    def folder_id(self, folder: str, *, create: bool = False) -> str:
        """The Graph id of ``folder``. Raises ConfigError when it does not exist and
        ``create`` is false."""
        parts = split_path(folder)
        key = "/".join(parts).lower()
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        parent: str | None = None
        for i, name in enumerate(parts):
            sub = "/".join(parts[: i + 1]).lower()
            with self._lock:
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
                elif resp.status_code != 404 or error_code(resp) not in (
                        "erroritemnotfound", "errorfoldernotfound", ""):
                    raise self._error(resp, f"reading folder {name!r}")
            if found is None:
                found = self._named(parent, name)
            if found is None:
                if not create:
                    raise ConfigError(f"mailbox {self._mailbox} has no folder {folder!r} "
                                      f"(no {name!r} in {'/'.join(parts[:i]) or 'the top'})",
                                      hint="check the folder name; well-known names are "
                                           + ", ".join(WELL_KNOWN))
                found = self.create(parent, name)
            with self._lock:
                self._ids[sub] = found
            parent = found
        assert parent is not None
        return parent

    def exists(self, fid: str) -> bool:
        """Whether folder ``fid`` still exists (a 404 says no; other errors raise)."""
        resp = self._s.request("GET", f"/mailFolders/{q(fid)}?$select=id",
                               what="checking a folder")
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._error(resp, "checking a folder")

    def list_all(self) -> list[FolderInfo]:
        """Every (not hidden) folder of the mailbox, parents before children."""
        out: list[FolderInfo] = []
        todo: list[tuple[str | None, str]] = [(None, "")]
        while todo:
            parent, prefix = todo.pop(0)
            for f in self.children(parent):
                name = prefix + f.get("displayName", "")
                self.remember(name, f["id"])
                out.append(FolderInfo(name=name, delimiter="/"))
                if f.get("childFolderCount"):
                    todo.append((f["id"], name + "/"))
        return out
