"""Helpers of the Email Source integration tests: a project per test pointing at a fresh
mailbox of the local stack, fast delivery, folder inspection, a cuttable TCP proxy.

A module of its own (not conftest.py) so that test modules can import it by a unique name
when the unit and integration suites run in one pytest session."""

from __future__ import annotations

import json
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from imapclient import IMAPClient

import postline
from postline.testing.waits import eventually


def make_mail(i: int, subject: str | None = None, *, sender: str = "Zoë <zoe@example.test>",
              attachments: list[tuple[str, str, bytes]] = (), body: str | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "reader@example.test"
    m["Subject"] = subject or f"Grüße Nr. {i}"
    m["Date"] = "Wed, 01 May 2024 12:00:00 +0000"
    m["Message-ID"] = f"<it-{i}-{time.time_ns()}@example.test>"
    m.set_content(body or f"Hallo {i}, ünïcödé body\n")
    for name, ctype, data in attachments:
        main, sub = ctype.split("/")
        m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes()


def deliver_many(stack, email: str, mails: list[bytes]) -> None:
    """All mails over one LMTP session (much faster than one session per mail)."""
    with smtplib.LMTP(stack.host, stack.ports["lmtp"], timeout=30) as lmtp:
        for raw in mails:
            lmtp.sendmail("stack@example.test", [email], raw)


class Mailbox:
    """Look at (and change) a stack mailbox over IMAP, outside postline."""

    def __init__(self, stack, user) -> None:
        self.stack, self.user = stack, user

    def client(self) -> IMAPClient:
        c = IMAPClient(self.stack.host, port=self.stack.ports["imap"], ssl=False, timeout=10)
        c.login(self.user.email, self.user.password)
        return c

    def count(self, folder: str) -> int:
        c = self.client()
        try:
            if not c.folder_exists(folder):
                return 0
            return c.select_folder(folder, readonly=True)[b"EXISTS"]
        finally:
            c.logout()

    def subjects(self, folder: str) -> list[str]:
        return self.stack.subjects(self.user.email, folder)

    def append(self, folder: str, raw: bytes) -> None:
        c = self.client()
        try:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw)
        finally:
            c.logout()


class SourceProject:
    """Writes a project (connection to ``user``'s mailbox) and runs it in-process."""

    def __init__(self, root: Path, stack, user, port: int | None = None) -> None:
        self.root, self.stack, self.user = root, stack, user
        self.port = port
        self.environ = {"IT_PASSWORD": user.password}

    def write(self, *, protocol: str = "imap", source: dict | None = None,
              workflow: dict | None = None, extra: list[dict] = ()) -> SourceProject:
        self.root.mkdir(parents=True, exist_ok=True)
        port = self.port or self.stack.ports[protocol]
        docs = [
            {"kind": "Secret", "name": "Creds", "values": {"password": "env:IT_PASSWORD"}},
            {"kind": "EmailConnection", "name": "Box",
             "incoming": {"protocol": protocol, "host": self.stack.host, "port": port,
                          "security": "none", "user": self.user.email, "connect_timeout": 5,
                          "read_timeout": 10,
                          "credential": {"type": "secret", "secret": "Creds.password"}}},
            {"kind": "EmailSource", "name": "Src", "connection": "Box",
             "polling": {"interval": 3600}, **(source or {})},
            {"kind": "Workflow", "name": "Flow", "source": "Src",
             "sinks": [{"type": "jsonl", "path": "out/mails.jsonl"}], **(workflow or {})},
            *extra,
        ]
        (self.root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
        return self

    def open(self):
        return postline.open_project(self.root, environ=self.environ)

    def run_once(self):
        from postline.workflow.engine import run_workflows

        return run_workflows(self.open(), once=True)

    def records(self, name: str = "out/mails.jsonl") -> list[dict]:
        path = self.root / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class DropProxy:
    """A TCP proxy to a server; ``cut()`` drops every open connection (a server drop)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.cut()
        self.sock.close()


def wait_until(condition, timeout: float = 15.0, what: str = "condition"):
    """:func:`postline.testing.waits.eventually` with this suite's default of 15 s."""
    return eventually(condition, timeout, what)
