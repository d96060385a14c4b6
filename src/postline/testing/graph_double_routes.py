"""The endpoints of the Graph test double (see ``graph_double.py``): one :class:`Call` per
authenticated request under a mailbox, dispatched by method and path."""

from __future__ import annotations

import base64
import binascii
import json
import re
import smtplib
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode

from postline.testing.graph_double_store import (
    GraphFault,
    copy_uid,
    decode_token,
    encode_token,
    not_found,
)

if TYPE_CHECKING:
    from postline.testing.graph_double import GraphDouble

REQUEST_LIMIT = 4 * 1024 * 1024


def without_bcc(raw: bytes) -> bytes:
    """``raw`` without its Bcc header field(s), byte for byte otherwise."""
    end = re.search(rb"\r?\n\r?\n", raw)
    head, rest = (raw[: end.start()], raw[end.start():]) if end else (raw, b"")
    lines = re.split(rb"(?<=\n)", head)
    out, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            out.append(line)
    return b"".join(out).rstrip(b"\r\n") + rest if out else rest.lstrip(b"\r\n")


def scopes_ok(claims: dict[str, Any], audience: str, needed: str) -> bool:
    scopes = set(str(claims.get("scope", "")).split())
    accepted = {f"{audience}/.default", f"{audience}/{needed}", needed}
    if needed == "Mail.Read":
        accepted |= {"Mail.ReadWrite", f"{audience}/Mail.ReadWrite"}
    return bool(scopes & accepted)


class Call:
    """One authenticated request under a mailbox: dispatch and the endpoint bodies."""

    def __init__(self, double: GraphDouble, method: str, rest: str,
                 query: dict[str, list[str]], headers: dict[str, str], body: bytes,
                 user: str, claims: dict[str, Any], base: str) -> None:
        self.d, self.store = double, double.store
        self.method, self.rest, self.query = method, rest, query
        self.headers, self.body, self.user, self.claims = headers, body, user, claims
        self.base = base   # https://127.0.0.1:PORT/v1.0/users/{m} (as the caller wrote it)
        self.immutable = "immutableid" in headers.get("prefer", "").lower().replace('"', "")

    def need(self, scope: str) -> None:
        if not scopes_ok(self.claims, self.d.audience, scope):
            raise GraphFault(403, "ErrorAccessDenied",
                             f"Access is denied. The token lacks the {scope} permission.")

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

    def list_top(self) -> Any:
        self.need("Mail.Read")
        with self.store.imap(self.user) as c:
            return self.ok({"value": self.store.children(c, None)})

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
            return self.ok({"value": self.store.children(c, self.store.imap_folder(c, fid))})

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
        self.need("Mail.Read")
        link = f"{self.base}/mailFolders/{fid}/messages/delta"
        select = self.query.get("$select", [""])[0]
        keep = {"$select": select} if select else {}
        with self.store.imap(self.user) as c:
            folder = self.store.imap_folder(c, fid)
            info = c.select_folder(folder, readonly=True)
            uv, top = str(info[b"UIDVALIDITY"]), int(info[b"UIDNEXT"]) - 1
            if "$deltatoken" in self.query:
                tok = self.query["$deltatoken"][0]
                if tok == "latest":
                    state = {"f": folder, "v": uv, "hi": top}
                    return self.ok({"value": [], "@odata.deltaLink":
                                    f"{link}?{urlencode({**keep, '$deltatoken': encode_token(state)}, safe='$')}"})
                state = decode_token(tok)
                low, high = int(state["hi"]), top
            elif "$skiptoken" in self.query:
                state = decode_token(self.query["$skiptoken"][0])
                low, high = int(state["lo"]), int(state["hi"])
            else:
                state = {"f": folder, "v": uv}
                low, high = 0, top
            if state["f"] != folder:
                raise GraphFault(400, "ErrorInvalidSyncStateData",
                                 "The sync state belongs to another folder.")
            if state["v"] != uv:
                raise GraphFault(410, "SyncStateNotFound",
                                 "The sync state is no longer valid; start a new sync.")
            uids = self.store.uids_between(c, low, high)
            page, more = uids[: self._page_size()], uids[self._page_size():]
            value = self.store.message_json(c, self.user, folder, uv, page)
        if more:
            nxt = {"f": folder, "v": uv, "lo": page[-1], "hi": high}
            return self.ok({"value": value, "@odata.nextLink":
                            f"{link}?{urlencode({**keep, '$skiptoken': encode_token(nxt)}, safe='$')}"})
        done = {"f": folder, "v": uv, "hi": high}
        return self.ok({"value": value, "@odata.deltaLink":
                        f"{link}?{urlencode({**keep, '$deltatoken': encode_token(done)}, safe='$')}"})

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
        self.need("Mail.Read")
        with self.store.imap(self.user) as c:
            _, uid = self.store.locate(c, self.user, mid)
            data = c.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
        if data is None:
            raise not_found()
        return 200, {"Content-Type": "text/plain"}, bytes(data)

    def patch_message(self, mid: str) -> Any:
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

    # -- sending ----------------------------------------------------------------------------

    def send_mail(self) -> Any:
        self.need("Mail.Send")
        if len(self.body) > REQUEST_LIMIT:
            raise GraphFault(413, "RequestBodyTooLarge",
                             "The maximum request length supported is 4MB.")
        if not self.headers.get("content-type", "").startswith("text/plain"):
            raise GraphFault(400, "ErrorInvalidRequest", "The test double implements only "
                             "the MIME form of sendMail (Content-Type: text/plain).")
        try:
            raw = base64.b64decode(self.body, validate=True)
        except (binascii.Error, ValueError):
            raise GraphFault(400, "ErrorMimeContentInvalidBase64String",
                             "Invalid base64 string for MIME content.") from None
        msg = BytesHeaderParser().parsebytes(raw)
        values = [str(v) for h in ("to", "cc", "bcc") for v in msg.get_all(h, [])]
        rcpts = [a for _, a in getaddresses(values) if a]
        if not rcpts or any("@" not in a for a in rcpts):
            raise GraphFault(400, "ErrorInvalidRecipients",
                             "At least one recipient is not valid.")
        with smtplib.SMTP(self.d.stack.host, self.d.stack.ports["smtp"], timeout=30) as smtp:
            smtp.sendmail(self.user, rcpts, without_bcc(raw))
        with self.store.imap(self.user) as c:  # Exchange keeps the Bcc in Sent Items
            c.append("Sent", raw, flags=[b"\\Seen"])
        return 202, {}, b""
