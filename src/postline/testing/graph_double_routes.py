"""The endpoints of the Graph test double (see ``graph_double.py``): one :class:`Call` per
authenticated request under a mailbox, dispatched by method and path."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode

from postline.testing.graph_double_send import SendRoutes
from postline.testing.graph_double_store import GraphFault, copy_uid, not_found

if TYPE_CHECKING:
    from postline.testing.graph_double import GraphDouble

def scopes_ok(claims: dict[str, Any], audience: str, needed: str, *, shared: bool = False
              ) -> bool:
    """Whether the token's scopes allow ``needed``. ``shared``: on another person's mailbox
    a delegate needs the ``.Shared`` permissions
    (https://learn.microsoft.com/en-us/graph/outlook-share-messages-folders)."""
    scopes = set(str(claims.get("scope", "")).split())
    names = [needed] + (["Mail.ReadWrite"] if needed == "Mail.Read" else [])
    if shared:
        names = [n + ".Shared" for n in names]
    accepted = {f"{audience}/{n}" for n in names} | set(names)
    if not shared:
        accepted.add(f"{audience}/.default")
    return bool(scopes & accepted)


class Call(SendRoutes):
    """One authenticated request under a mailbox: dispatch and the endpoint bodies (the
    sending ones in ``graph_double_send.py``)."""

    def __init__(self, double: GraphDouble, method: str, rest: str,
                 query: dict[str, list[str]], headers: dict[str, str], body: bytes,
                 user: str, claims: dict[str, Any], base: str, shared: bool = False) -> None:
        self.d, self.store = double, double.store
        self.method, self.rest, self.query = method, rest, query
        self.headers, self.body, self.user, self.claims = headers, body, user, claims
        self.base = base   # https://127.0.0.1:PORT/v1.0/users/{m} (as the caller wrote it)
        self.immutable = "immutableid" in headers.get("prefer", "").lower().replace('"', "")
        self.shared = shared   # a delegate acting on another person's mailbox

    def need(self, scope: str) -> None:
        if not scopes_ok(self.claims, self.d.audience, scope, shared=self.shared):
            wanted = scope + (".Shared" if self.shared else "")
            raise GraphFault(403, "ErrorAccessDenied",
                             f"Access is denied. The token lacks the {wanted} permission.")

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise GraphFault(400, "BadRequest", "Unable to read JSON request payload.") from None
        if not isinstance(data, dict):
            raise GraphFault(400, "BadRequest", "Unable to read JSON request payload.")
        return data

    def run(self) -> tuple[int, dict[str, str], bytes]:
        routes = [
            ("GET", r"/mailFolders", self.list_top),
            ("POST", r"/mailFolders", self.create_top),
            ("GET", r"/mailFolders/([^/]+)", self.get_folder),
            ("GET", r"/mailFolders/([^/]+)/childFolders", self.list_children),
            ("POST", r"/mailFolders/([^/]+)/childFolders", self.create_child),
            ("GET", r"/mailFolders/([^/]+)/messages/delta", self.delta),
            ("GET", r"/messages/([^/]+)/\$value", self.mime),
            ("GET", r"/messages/([^/]+)", self.get_message),
            ("PATCH", r"/messages/([^/]+)", self.patch_message),
            ("DELETE", r"/messages/([^/]+)", self.delete_message),
            ("POST", r"/messages/([^/]+)/(move|copy)", self.move_or_copy),
            ("POST", r"/messages/([^/]+)/permanentDelete", self.permanent_delete),
            ("POST", r"/sendMail", self.send_mail),
            ("POST", r"/messages", self.create_draft),
            ("POST", r"/messages/([^/]+)/attachments", self.add_attachment),
            ("POST", r"/messages/([^/]+)/attachments/createUploadSession",
             self.create_upload_session),
            ("POST", r"/messages/([^/]+)/send", self.send_draft),
        ]
        for method, pattern, handler in routes:
            m = re.fullmatch(pattern, self.rest)
            if m and method == self.method:
                args = [unquote(g) for g in m.groups()]
                return handler(*args)
        raise GraphFault(400, "BadRequest", f"Unsupported request {self.method} {self.rest}")

    @staticmethod
    def ok(data: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

    # -- folders -------------------------------------------------------------------------

    def _hidden_too(self) -> bool:
        return self.query.get("includeHiddenFolders", ["false"])[0].lower() == "true"

    def list_top(self) -> Any:
        self.need("Mail.Read")
        with self.store.imap(self.user) as c:
            return self.ok({"value": self.store.children(c, None, hidden=self._hidden_too())})

    def create_top(self) -> Any:
        self.need("Mail.ReadWrite")
        with self.store.imap(self.user) as c:
            return self.ok(self.store.create_folder(
                c, None, str(self.json_body().get("displayName", ""))), 201)

    def get_folder(self, fid: str) -> Any:
        self.need("Mail.Read")
        with self.store.imap(self.user) as c:
            return self.ok(self.store.folder_json(c, self.store.imap_folder(c, fid)))

    def list_children(self, fid: str) -> Any:
        self.need("Mail.Read")
        with self.store.imap(self.user) as c:
            return self.ok({"value": self.store.children(c, self.store.imap_folder(c, fid),
                                                         hidden=self._hidden_too())})

    def create_child(self, fid: str) -> Any:
        self.need("Mail.ReadWrite")
        with self.store.imap(self.user) as c:
            parent = self.store.imap_folder(c, fid)
            return self.ok(self.store.create_folder(
                c, parent, str(self.json_body().get("displayName", ""))), 201)

    # -- delta -----------------------------------------------------------------------------

    def _page_size(self) -> int:
        m = re.search(r"odata\.maxpagesize=(\d+)", self.headers.get("prefer", ""))
        wanted = int(m.group(1)) if m else self.d.page_size
        return max(1, min(wanted, self.d.page_size))

    def delta(self, fid: str) -> Any:
        """GET .../messages/delta (see graph_double_delta.py for what it answers)."""
        self.need("Mail.Read")
        link = f"{self.base}/mailFolders/{fid}/messages/delta"
        keep = {k: self.query[k][0] for k in ("$select", "changeType") if k in self.query}
        with self.store.imap(self.user) as c:
            folder = self.store.imap_folder(c, fid)
            value, kind, token = self.d.delta.page(c, self.user, folder, self.query,
                                                   self._page_size())
        name, param = (("@odata.nextLink", "$skiptoken") if kind == "next"
                       else ("@odata.deltaLink", "$deltatoken"))
        return self.ok({"value": value,
                        name: f"{link}?{urlencode({**keep, param: token}, safe='$,')}"})

    # -- messages --------------------------------------------------------------------------

    def _json_of(self, c: Any, folder: str, uid: int) -> dict[str, Any]:
        info = c.select_folder(folder)
        return self.store.message_json(c, self.user, folder, str(info[b"UIDVALIDITY"]),
                                       [uid])[0]

    def get_message(self, mid: str) -> Any:
        self.need("Mail.Read")
        with self.store.imap(self.user) as c:
            folder, uid = self.store.locate(c, self.user, mid)
            return self.ok(self._json_of(c, folder, uid))

    def mime(self, mid: str) -> Any:
        """GET $value: the MIME as ``text/plain``
        (https://learn.microsoft.com/en-us/graph/outlook-get-mime-message). An Accept that
        allows only JSON is answered 406 Not Acceptable, as the errors page describes 406
        (https://learn.microsoft.com/en-us/graph/errors); the SDKs send
        application/octet-stream."""
        self.need("Mail.Read")
        accept = self.headers.get("accept", "*/*").lower()
        if not any(t in accept for t in ("*/*", "text/plain", "text/*",
                                           "application/octet-stream", "message/rfc822")):
            raise GraphFault(406, "ErrorInvalidRequest",
                             f"The requested format {accept!r} is not supported for $value.")
        with self.store.imap(self.user) as c:
            _, uid = self.store.locate(c, self.user, mid)
            data = c.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
        if data is None:
            raise not_found()
        return 200, {"Content-Type": "text/plain"}, bytes(data)

    def patch_message(self, mid: str) -> Any:
        if mid in self.d.outbox.drafts:
            return self.patch_draft(mid)
        self.need("Mail.ReadWrite")
        body = self.json_body()
        with self.store.imap(self.user) as c:
            folder, uid = self.store.locate(c, self.user, mid)
            if "isRead" in body:
                (c.add_flags if body["isRead"] else c.remove_flags)([uid], [b"\\Seen"])
            status = (body.get("flag") or {}).get("flagStatus")
            if status:
                (c.add_flags if status == "flagged" else c.remove_flags)([uid], [b"\\Flagged"])
            return self.ok(self._json_of(c, folder, uid))

    def _transfer(self, c: Any, mid: str, dest: str, *, move: bool) -> dict[str, Any]:
        _, uid = self.store.locate(c, self.user, mid)
        target = self.store.imap_folder(c, dest)
        new_uid = copy_uid(c.copy([uid], target))
        if move:
            c.add_flags([uid], [b"\\Deleted"])
            c.uid_expunge([uid])
        info = c.select_folder(target)
        uv = str(info[b"UIDVALIDITY"])
        if new_uid is None:  # no UIDPLUS: the newest message is ours
            new_uid = max(c.search(["ALL"]) or [0])
        if move:
            self.store.moved(self.user, mid, target, uv, new_uid, keep_id=self.immutable)
        return self.store.message_json(c, self.user, target, uv, [new_uid])[0]

    def move_or_copy(self, mid: str, action: str) -> Any:
        self.need("Mail.ReadWrite")
        dest = str(self.json_body().get("destinationId", ""))
        if not dest:
            raise GraphFault(400, "ErrorInvalidIdMalformed", "destinationId is missing.")
        with self.store.imap(self.user) as c:
            return self.ok(self._transfer(c, mid, dest, move=action == "move"), 201)

    def delete_message(self, mid: str) -> Any:
        if mid in self.d.outbox.drafts:
            return self.delete_draft(mid)
        self.need("Mail.ReadWrite")
        with self.store.imap(self.user) as c:
            self._transfer(c, mid, "deleteditems", move=True)
        return 204, {}, b""

    def permanent_delete(self, mid: str) -> Any:
        self.need("Mail.ReadWrite")
        with self.store.imap(self.user) as c:
            _, uid = self.store.locate(c, self.user, mid)
            c.add_flags([uid], [b"\\Deleted"])
            c.uid_expunge([uid])
        return 204, {}, b""
