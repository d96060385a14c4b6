"""IMAP reader on IMAPClient (which wraps imaplib).

We open the socket ourselves (:func:`postline.protocols.net.open_socket`) and hand it to
imaplib, so DNS/TCP/TLS failures are translated in one place and traced for
``test-connection``; everything after the greeting goes through IMAPClient's public API
except where noted.
"""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imx

from postline import tls
from postline.auth import sasl
from postline.auth.credentials import Login, OAuthLogin, PasswordLogin
from postline.errors import AuthError, ConnectError, PostlineError, ProtocolError
from postline.protocols import net
from postline.protocols.base import Capabilities, MailboxReader
from postline.protocols.capability_names import ImapCapability
from postline.protocols.imap_ops import MailboxOperations, _server_text, _text
from postline.protocols.tls_bio import BioContext
from postline.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.imap")

IDLE_RENEW_SECONDS = 25 * 60   # RFC 2177: servers may drop an IDLE after 30 minutes
NOOP_POLL_SECONDS = 30.0


class _IMAP4OnSocket(imaplib.IMAP4):
    """imaplib.IMAP4 over a socket that is already connected (and maybe TLS-wrapped)."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._given_sock = sock
        self.first_line: bytes | None = None
        try:
            super().__init__(host, port)
        except imaplib.IMAP4.error as exc:
            # imaplib says only "None" for a greeting it cannot read: name what answered
            other = net.other_service(self.first_line)
            if other and other != "an IMAP server":
                raise imaplib.IMAP4.error(
                    f"it answered like {other} "
                    f"({self.first_line[:60].decode('ascii', 'replace').strip()!r}); check the "
                    "port: IMAP is usually 993 (tls) or 143 (starttls)") from exc
            if self.first_line is not None:
                raise imaplib.IMAP4.error(
                    f"its first line is not an IMAP greeting: {self.first_line[:60]!r}") from exc
            raise

    # imaplib refuses a line over 1 MB, and `UID SEARCH ALL` answers in one line: a folder
    # of ~150,000 mails or more could not be listed (a million UIDs take ~7 MB)
    MAX_LINE = 256 * 1024 * 1024

    def readline(self) -> bytes:
        """imaplib's ``readline`` with :attr:`MAX_LINE` for its 1 MB limit."""
        line = self.file.readline(self.MAX_LINE + 1)
        if len(line) > self.MAX_LINE:
            raise self.error(f"got more than {self.MAX_LINE} bytes")
        return line

    def _get_line(self) -> bytes:
        line = super()._get_line()
        if self.first_line is None:
            self.first_line = line
        return line

    def _create_socket(self, timeout: Any = None) -> socket.socket:  # imaplib's own hook
        return self._given_sock


class _Client(IMAPClient):
    """IMAPClient that uses our socket: overriding its factory of the imaplib object is
    the only way to give it one (it always connects by itself otherwise)."""

    def __init__(self, sock: socket.socket, host: str, port: int, read_timeout: float) -> None:
        self._given_sock = sock
        super().__init__(host, port=port, ssl=False, timeout=read_timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return _IMAP4OnSocket(self._given_sock, self.host, self.port)


class ImapReader(MailboxOperations, MailboxReader):
    """:class:`MailboxReader` for one IMAP mailbox. Not thread-safe: one per worker."""

    def __init__(self, *, endpoint: Any, login: Login, trace: Trace = NULL_TRACE,
                 idle_renew: float = IDLE_RENEW_SECONDS,
                 noop_poll: float = NOOP_POLL_SECONDS) -> None:
        self.endpoint = endpoint
        self.host: str = endpoint.host
        self.port: int = endpoint.effective_port
        self._login = login
        self._trace = trace
        self._idle_renew = idle_renew
        self._noop_poll = noop_poll
        self._client: _Client | None = None
        self._selected: str | None = None
        self._uidvalidity: str = ""
        self._uidnext: int | None = None
        self._fresh = False
        self._readonly = False
        self._known_folders: set[str] = set()
        self._delimiter: str | None = None   # the server's hierarchy delimiter, once asked
        self._bulk = None   # a pipelined fetch in progress (imap_bulk.BulkFetch)
        self.capabilities = Capabilities()
        self.tls_info: dict[str, Any] | None = None

    # -- connecting ---------------------------------------------------------------------

    def connect(self) -> None:
        ep = self.endpoint
        # TLS over memory BIOs: a bulk fetch reads the socket in bursts (tls_bio.py)
        sock = net.open_socket(ep, trace=self._trace, bio=True)
        if ep.security == "tls":
            self.tls_info = tls.describe_session(sock, verified=ep.verify_identity,
                                                 certificate=self._trace.detailed)
        self._client = net.greet(
            ep, sock, host=self.host, port=self.port, trace=self._trace, protocol="IMAP",
            make=lambda: _Client(sock, self.host, self.port, ep.read_timeout),
            welcome=lambda c: _text(c.welcome), protocol_errors=(imaplib.IMAP4.error,))
        if ep.security == "starttls":
            self._starttls()
        with self._trace.step("capabilities") as st:
            caps = self._caps()
            st.detail = " ".join(caps)
            st.data = {"capabilities": caps}
        self._authenticate()
        after = self._caps()  # servers often announce more after login (MOVE, UIDPLUS ...)
        if after != caps:
            with self._trace.step("capabilities") as st:
                st.detail = "after login: " + " ".join(after)
                st.data = {"capabilities": after}
        caps = after
        self.capabilities = Capabilities(folders=True, move=ImapCapability.MOVE in caps,
                                         idle=ImapCapability.IDLE in caps, flags=True,
                                         cursor=True,
                                         raw=tuple(caps))

    def _caps(self) -> list[str]:
        client = self._need()
        with self._errors("CAPABILITY"):
            return [_text(c).upper() for c in client.capabilities()]

    def _starttls(self) -> None:
        client = self._need()

        def upgrade(ctx: ssl.SSLContext) -> ssl.SSLSocket:
            client.starttls(ssl_context=BioContext(ctx))
            return client.socket()

        self.tls_info = net.starttls(
            self.endpoint, host=self.host, port=self.port, trace=self._trace, protocol="IMAP",
            word="STARTTLS", capabilities=self._caps, upgrade=upgrade,
            protocol_errors=(imaplib.IMAP4.error,), close=self.close)

    def _authenticate(self) -> None:
        login = self._login
        if login is None:
            return
        encrypted = self.endpoint.security != "none"
        what = "password" if isinstance(login, PasswordLogin) else "OAuth token"
        net.check_auth_allowed(self.endpoint, encrypted=encrypted, what=what)
        mechs = {c[5:] for c in self._caps() if c.startswith("AUTH=")}
        with self._trace.step("authentication") as st:
            if isinstance(login, PasswordLogin):
                st.detail = self._password_login(login, mechs)
            else:
                st.detail = self._oauth_login(login, mechs)

    def _password_login(self, login: PasswordLogin, mechs: set[str]) -> str:
        client = self._need()
        # AUTHENTICATE PLAIN carries UTF-8 passwords; imaplib's LOGIN only ASCII ones.
        use_plain = "PLAIN" in mechs
        try:
            with self._errors("login", translate_no=False):
                if use_plain:
                    client.plain_login(login.user, login.password)
                else:
                    client.login(login.user, login.password)
        except imx.IMAPClientError as exc:
            self._raise_if_lost(exc, "login")
            raise AuthError(f"IMAP login as {login.user} at {self.host}:{self.port} failed: "
                            f"{_server_text(exc)}",
                            hint="check the user and the password in the Secret") from exc
        return f"{'AUTHENTICATE PLAIN' if use_plain else 'LOGIN'} as {login.user}"

    def _oauth_login(self, login: OAuthLogin, mechs: set[str]) -> str:
        dialogue = sasl.oauth_dialogue(offered=mechs, user=login.user, protocol="IMAP",
                                       host=self.host, port=self.port)
        # stepped by hand, not with sasl.drive: imapclient owns the exchange of one attempt
        step = next(dialogue)
        while True:
            got: str | sasl.Reply
            if isinstance(step, sasl.NeedToken):
                got = login.provider.token(force_refresh=step.refresh)
            elif isinstance(step, sasl.Start):
                got = self._sasl_attempt(step, dialogue)
            else:
                raise ProtocolError(f"IMAP authentication at {self.host}:{self.port}: an "
                                    "answer was asked for outside of a challenge")
            try:
                step = dialogue.send(got)
            except StopIteration as done:
                return f"AUTHENTICATE {done.value} as {login.user}"

    def _sasl_attempt(self, step: sasl.Start, dialogue: sasl.Dialogue) -> sasl.Reply:
        """One AUTHENTICATE of ``dialogue``: imapclient calls back per challenge; the first
        asks for the initial response, a later one is the server's error report, handed to
        the dialogue, whose empty answer RFC 7628 wants (imapclient's own oauth2_login
        would send the token again). Returns the outcome for the dialogue."""
        pending: bytes | None = step.response

        def mechanism(challenge: bytes) -> bytes:
            nonlocal pending
            if pending is not None:
                first, pending = pending, None
                return first
            answer = dialogue.send(sasl.Challenge(challenge))
            return answer.response if isinstance(answer, sasl.Answer) else b""

        try:
            with self._errors("authentication", translate_no=False):
                self._need().sasl_login(step.mechanism, mechanism)
        except imx.IMAPClientError as exc:
            self._raise_if_lost(exc, "authentication")
            return sasl.Outcome(ok=False, text=_server_text(exc))
        return sasl.Outcome(ok=True)

    def close(self) -> None:
        client, self._client = self._client, None
        self._selected = None
        self._bulk = None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - close never raises
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001
                pass

    # -- errors ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str, *, translate_no: bool = True) -> Iterator[None]:
        """Translate imaplib/socket failures during ``what`` into postline errors."""
        try:
            yield
        except PostlineError:
            raise
        except TimeoutError as exc:
            self._client = None  # a half-read answer leaves the session unusable
            raise net.translate_os_error(exc, host=self.host, port=self.port,
                                         phase=what, timeout=self.endpoint.read_timeout) from exc
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            self._client = None
            raise ConnectError(f"lost the connection to IMAP server {self.host}:{self.port} "
                               f"during {what}: {exc}",
                               hint="it will be retried with a new connection") from exc
        except imaplib.IMAP4.error as exc:
            if not translate_no:
                raise
            raise ProtocolError(f"IMAP server {self.host}:{self.port} refused {what}: "
                                f"{_server_text(exc)}", disposition="fatal") from exc

    def _raise_if_lost(self, exc: BaseException, what: str) -> None:
        """IMAPClient turns a lost connection during login into LoginError; undo that."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, (imaplib.IMAP4.abort, OSError, EOFError)):
                self._client = None
                raise ConnectError(f"lost the connection to IMAP server {self.host}:"
                                   f"{self.port} during {what}: {_server_text(cause)}",
                                   hint="it will be retried with a new connection") from exc
            cause = cause.__context__
        return None

    def _need(self) -> _Client:
        if self._client is None:
            raise ConnectError(f"not connected to IMAP server {self.host}:{self.port}",
                               hint="open the reader with 'with' or call connect()")
        if self._bulk is not None and self._bulk.active:
            # a pipelined fetch has responses in flight: read them before another command
            with self._errors("UID FETCH"):
                self._bulk.drain()
            if self._client is None:
                raise ConnectError(f"lost the connection to IMAP server {self.host}:"
                                   f"{self.port}", hint="it will be retried")
        return self._client

