"""An in-memory MailboxReader for unit tests: folders of raw mails, UIDs, UIDVALIDITY,
moves, and injectable faults (a ConnectError or a crash at a chosen call)."""

from __future__ import annotations

import json
import threading
from email.message import EmailMessage
from pathlib import Path

from postline.errors import ConnectError
from postline.protocols.base import (
    Capabilities,
    FolderInfo,
    FolderState,
    MailboxReader,
    MessageRef,
    RawMessage,
)


class Crash(BaseException):
    """Simulates the process dying (not caught by the runner's error handling)."""


class FakeMailbox:
    """Server-side state, shared by every reader opened on it."""

    def __init__(self, *, pop3: bool = False, idle: bool = True, cursor: bool = False) -> None:
        self.pop3 = pop3
        self.idle = idle
        self.cursor = cursor   # list_messages honours a cursor (the highest UID), as IMAP
        self.folders: dict[str, dict[int, bytes]] = {"INBOX": {}}
        self.versions: dict[str, int] = {"INBOX": 1000}
        self.next_uid: dict[str, int] = {"INBOX": 1}
        self.faults: dict[str, list[BaseException]] = {}
        self.calls: list[str] = []
        self.listed: list[int] = []   # how many refs each list_messages returned
        self.changed = threading.Event()
        self.connects = 0
        self.readonly: bool | None = None   # how the folder was last opened

    def add(self, raw: bytes, folder: str = "INBOX") -> int:
        self._ensure(folder)
        uid = self.next_uid[folder]
        self.next_uid[folder] += 1
        self.folders[folder][uid] = raw
        self.changed.set()
        return uid

    def _ensure(self, folder: str) -> None:
        if folder not in self.folders:
            self.folders[folder] = {}
            self.versions[folder] = 1000 + len(self.versions)
            self.next_uid[folder] = 1

    def recreate(self, folder: str) -> None:
        """Delete and recreate ``folder`` with the same mails: new UIDVALIDITY, new UIDs."""
        mails = list(self.folders[folder].values())
        self.folders[folder] = {}
        self.versions[folder] += 1
        self.next_uid[folder] = 1
        for m in mails:
            self.add(m, folder)

    def fail(self, call: str, exc: BaseException) -> None:
        self.faults.setdefault(call, []).append(exc)

    def reader(self) -> FakeReader:
        return FakeReader(self)


class FakeReader(MailboxReader):
    def __init__(self, box: FakeMailbox) -> None:
        self.box = box
        self.capabilities = Capabilities(folders=not box.pop3, move=True, idle=box.idle,
                                         cursor=box.cursor)
        self.connected = False

    def _call(self, name: str) -> None:
        self.box.calls.append(name)
        pending = self.box.faults.get(name)
        if pending:
            raise pending.pop(0)
        if not self.connected and name != "connect":
            raise ConnectError("not connected")

    def connect(self) -> None:
        self._call("connect")
        self.connected = True
        self.box.connects += 1

    def close(self) -> None:
        self.connected = False

    def list_folders(self) -> list[FolderInfo]:
        self._call("list_folders")
        return [FolderInfo(name=f, delimiter="/") for f in self.box.folders]

    def open_folder(self, folder: str, *, readonly: bool = False) -> FolderState:
        self._call("open_folder")
        self.box.readonly = readonly
        self.box._ensure(folder)
        version = "" if self.box.pop3 else str(self.box.versions[folder])
        return FolderState(name=folder, folder_version=version,
                           exists=len(self.box.folders[folder]))

    def list_messages(self, folder, *, cursor=None):
        self._call("list_messages")
        version = "" if self.box.pop3 else str(self.box.versions[folder])
        refs = [MessageRef(folder=folder, folder_version=version,
                           id=(f"uidl-{uid}" if self.box.pop3 else str(uid)), size=len(raw),
                           internal_date="2024-05-01T12:00:00Z")
                for uid, raw in sorted(self.box.folders[folder].items())
                if not (self.box.cursor and cursor) or uid > int(cursor)]
        self.box.listed.append(len(refs))
        return refs, str(self.box.next_uid[folder] - 1) if self.box.cursor else None

    def _uid(self, ref: MessageRef) -> int:
        return int(ref.id.removeprefix("uidl-"))

    def fetch(self, refs, *, spool_dir: Path, inline_limit=8 << 20, batch_size=100):
        self._call("fetch")
        out = []
        for ref in refs:
            raw = self.box.folders.get(ref.folder, {}).get(self._uid(ref))
            if raw is None:
                continue
            if len(raw) > inline_limit:
                spool_dir.mkdir(parents=True, exist_ok=True)
                path = spool_dir / f"fake-{ref.id}.eml"
                path.write_bytes(raw)
                out.append(RawMessage(ref=ref, path=path))
            else:
                out.append(RawMessage(ref=ref, data=raw))
        return iter(out)

    def move(self, refs, target_folder: str) -> None:
        self._call("move")
        if self.box.pop3:
            raise ConnectError("POP3 cannot move")
        for ref in refs:
            raw = self.box.folders[ref.folder].pop(self._uid(ref), None)
            if raw is not None:
                self.box.add(raw, target_folder)

    def copy(self, refs, target_folder: str) -> None:
        self._call("copy")
        for ref in refs:
            self.box.add(self.box.folders[ref.folder][self._uid(ref)], target_folder)

    def delete(self, refs) -> None:
        self._call("delete")
        for ref in refs:
            self.box.folders[ref.folder].pop(self._uid(ref), None)

    def set_flags(self, refs, flags, *, add=True) -> None:
        self._call("set_flags")

    def wait_for_changes(self, folder: str, timeout: float) -> bool:
        self._call("wait_for_changes")
        got = self.box.changed.wait(min(timeout, 0.05))
        self.box.changed.clear()
        return got


def mail(subject: str = "Hello", sender: str = "Alice <alice@example.test>", *,
         body: str = "hi there\n", html: str | None = None,
         attachments: list[tuple[str, str, bytes]] = (), message_id: str | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "bob@example.test"
    m["Subject"] = subject
    m["Date"] = "Wed, 01 May 2024 12:00:00 +0000"
    if message_id is not False:
        m["Message-ID"] = message_id or f"<{abs(hash((subject, sender, body)))}@example.test>"
    m.set_content(body)
    if html:
        m.add_alternative(html, subtype="html")
    for name, ctype, data in attachments:
        main, sub = ctype.split("/")
        m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes()


def write_project(root: Path, *, source: dict | None = None, workflow: dict | None = None,
                  protocol: str = "imap", extra: list[dict] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [
        {"kind": "EmailConnection", "name": "Box",
         "incoming": {"protocol": protocol, "host": "127.0.0.1", "port": 1, "security": "none",
                      "user": "u@example.test", "credential": {"type": "none"}}},
        {"kind": "EmailSource", "name": "Src", "connection": "Box",
         "polling": {"interval": 5}, **(source or {})},
        {"kind": "Workflow", "name": "Flow", "source": "Src",
         "sinks": [{"type": "jsonl", "path": "out/mails.jsonl"}], **(workflow or {})},
        *extra,
    ]
    (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    return root


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
