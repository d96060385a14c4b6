"""Tiny misbehaving servers for tests: what real servers rarely do on purpose.

Each runs on 127.0.0.1 on a free port in a background thread, for the duration of a
``with`` block, and speaks just enough IMAP, POP3 or SMTP to reach the fault::

    with FaultServer(no_starttls("imap")) as srv:     # greets, offers no STARTTLS
        ... connect to srv.port ...

Handlers: :func:`no_starttls`, :func:`drops_mid_command`, :func:`silent` (never answers),
:func:`smtp_script` (an SMTP server that refuses chosen recipients, or vanishes after the
final dot of DATA). Pass ``tls=context`` to serve a handler over implicit TLS (e.g. with a
certificate for another host name).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

HOST = "127.0.0.1"

GREETING = {"imap": "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fault server ready",
            "pop3": "+OK fault server ready", "smtp": "220 fault.test ESMTP fault server"}


class Conn:
    """One client connection as seen by a handler: line I/O with a deadline."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        sock.settimeout(0.2)
        self._buf = b""

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def readline(self) -> str | None:
        """The next line without CRLF; None when the client left or the server stops."""
        while b"\n" not in self._buf:
            if self.stop.is_set():
                return None
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def wait_closed(self) -> None:
        """Hold the connection open without answering until the client or server ends."""
        while self.readline() is not None:
            pass


Handler = Callable[[Conn], None]


class FaultServer:
    """Serve ``handler`` on a free loopback port while the ``with`` block runs."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.host = HOST
        self.port = 0
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    def __enter__(self) -> FaultServer:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((HOST, 0))
        ls.listen(16)
        ls.settimeout(0.2)
        self._listener, self.port = ls, ls.getsockname()[1]
        t = threading.Thread(target=self._accept, name=f"fault-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=5)
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock.settimeout(5)
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return
            self.handler(Conn(sock, self._stop))
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass


def _capabilities(protocol: str, conn: Conn, line: str) -> bool:
    """Answer capability/greeting-phase commands without STARTTLS; False for others."""
    word = line.split()
    if protocol == "imap" and len(word) >= 2:
        tag, cmd = word[0], word[1].upper()
        if cmd == "CAPABILITY":
            conn.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
            conn.send(f"{tag} OK done")
            return True
        if cmd == "LOGOUT":
            conn.send("* BYE bye")
            conn.send(f"{tag} OK done")
            return True
        if cmd == "NOOP":
            conn.send(f"{tag} OK done")
            return True
    if protocol == "smtp" and word:
        cmd = word[0].upper()
        if cmd in ("EHLO", "HELO"):
            conn.send("250-fault.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
            return True
        if cmd in ("QUIT", "RSET", "NOOP"):
            conn.send("221 bye" if cmd == "QUIT" else "250 ok")
            return True
    if protocol == "pop3" and word:
        cmd = word[0].upper()
        if cmd == "CAPA":
            conn.send("+OK\r\nUSER\r\nUIDL\r\nSASL PLAIN\r\n.")
            return True
        if cmd == "QUIT":
            conn.send("+OK bye")
            return True
    return False


def no_starttls(protocol: str) -> Handler:
    """A server that greets and answers capabilities, never offering STARTTLS/STLS."""

    def handle(conn: Conn) -> None:
        conn.send(GREETING[protocol])
        while (line := conn.readline()) is not None:
            if not _capabilities(protocol, conn, line):
                tag = line.split()[0] if protocol == "imap" and line.split() else ""
                conn.send({"imap": f"{tag} BAD not here", "pop3": "-ERR not here",
                           "smtp": "502 not here"}[protocol])
            if line.upper().split()[-1:] in (["LOGOUT"], ["QUIT"]):
                return

    return handle


def drops_mid_command(protocol: str) -> Handler:
    """Greets and answers capabilities, then on the first other command (login, MAIL ...)
    sends half a reply and closes the connection."""

    def handle(conn: Conn) -> None:
        conn.send(GREETING[protocol])
        while (line := conn.readline()) is not None:
            if not _capabilities(protocol, conn, line):
                conn.sock.sendall({"imap": b"* 1 FE", "pop3": b"+O", "smtp": b"25"}[protocol])
                return

    return handle


def silent() -> Handler:
    """Accepts the connection and never says anything (a read timeout, or a TLS port
    waiting for a ClientHello)."""

    def handle(conn: Conn) -> None:
        conn.wait_closed()

    return handle


def smtp_script(*, refuse: Callable[[str], str | None] = lambda rcpt: None,
                drop_after_data: bool = False, pipelining: bool = True,
                received: list[bytes] | None = None) -> Handler:
    """An SMTP server without AUTH: ``refuse(address)`` returns a reply such as
    ``"550 5.1.1 no such user"`` to refuse that recipient; ``drop_after_data`` closes the
    connection after the final dot without a reply. Accepted bodies go to ``received``."""

    def handle(conn: Conn) -> None:
        conn.send(GREETING["smtp"])
        ok_rcpts = 0
        while (line := conn.readline()) is not None:
            cmd = line[:4].upper()
            if cmd in ("EHLO", "HELO"):
                exts = ["250-fault.test", "250-SIZE 10485760", "250-8BITMIME"]
                if pipelining:
                    exts.append("250-PIPELINING")
                conn.send("\r\n".join(exts + ["250 SMTPUTF8"]))
            elif cmd == "MAIL":
                ok_rcpts = 0
                conn.send("250 2.1.0 ok")
            elif cmd == "RCPT":
                addr = line.split(":", 1)[1].strip().strip("<>")
                answer = refuse(addr)
                ok_rcpts += answer is None
                conn.send(answer or "250 2.1.5 ok")
            elif cmd == "DATA":
                if not ok_rcpts:
                    conn.send("554 5.5.1 no valid recipients")
                    continue
                conn.send("354 go ahead")
                body = []
                while (part := conn.readline()) is not None and part != ".":
                    body.append(part[1:] if part.startswith("..") else part)
                if drop_after_data:
                    return
                if received is not None:
                    received.append("\r\n".join(body).encode())
                conn.send("250 2.0.0 Ok: queued as FAULT1")
            elif cmd == "QUIT":
                conn.send("221 bye")
                return
            else:
                conn.send("250 ok" if cmd in ("RSET", "NOOP") else "502 5.5.2 not here")

    return handle


class Pop3Maildrop:
    """The mail of :func:`pop3_without_uidl`, shared by all its sessions (add mail between
    sessions with :meth:`add`; DELE takes effect at QUIT, as RFC 1939 says)."""

    def __init__(self, mails: list[bytes] | None = None) -> None:
        self.mails: list[bytes] = list(mails or [])
        self.lock = threading.Lock()

    def add(self, raw: bytes) -> None:
        with self.lock:
            self.mails.append(raw)


def pop3_without_uidl(drop: Pop3Maildrop) -> Handler:
    """A POP3 server that does not know UIDL (RFC 1939 makes it optional): USER/PASS, STAT,
    LIST, TOP, RETR, DELE, QUIT, and ``-ERR`` to UIDL and CAPA."""

    def lines_of(raw: bytes) -> list[str]:
        text = raw.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
        return [("." + ln) if ln.startswith(".") else ln for ln in text.split("\n")]

    def handle(conn: Conn) -> None:
        with drop.lock:
            session = list(drop.mails)   # a session sees the maildrop as it was at login
        deleted: set[int] = set()
        conn.send(GREETING["pop3"])
        while (line := conn.readline()) is not None:
            cmd, _, arg = line.partition(" ")
            cmd = cmd.upper()
            if cmd in ("USER", "PASS"):
                conn.send("+OK")
            elif cmd == "STAT":
                live = [m for i, m in enumerate(session, 1) if i not in deleted]
                conn.send(f"+OK {len(live)} {sum(len(m) for m in live)}")
            elif cmd == "LIST":
                conn.send("+OK")
                for i, m in enumerate(session, 1):
                    if i not in deleted:
                        conn.send(f"{i} {len(m)}")
                conn.send(".")
            elif cmd in ("TOP", "RETR"):
                num = int(arg.split()[0])
                if not 1 <= num <= len(session) or num in deleted:
                    conn.send("-ERR no such message")
                    continue
                raw = session[num - 1]
                if cmd == "TOP":
                    raw = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                conn.send("+OK")
                for ln in lines_of(raw):
                    conn.send(ln)
                conn.send(".")
            elif cmd == "DELE":
                deleted.add(int(arg))
                conn.send("+OK")
            elif cmd == "QUIT":
                with drop.lock:
                    gone = {id(session[i - 1]) for i in deleted}
                    drop.mails = [m for m in drop.mails if id(m) not in gone]
                conn.send("+OK bye")
                return
            elif cmd == "NOOP":
                conn.send("+OK")
            else:  # UIDL, CAPA, AUTH, STLS ...
                conn.send("-ERR unknown command")

    return handle
