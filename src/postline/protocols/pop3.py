"""POP3 reader on :mod:`poplib`.

POP3 has one folder (``INBOX``), no flags, no push. Message ids are UIDL values; for the
rare server without UIDL the id is ``sha256:`` + a hash of the message's headers
(``TOP n 0``), which is stable as long as the mail is not changed on the server.
A POP3 session sees the maildrop as it was at login, so :meth:`Pop3Reader.list_messages`
logs in again when it already listed once, and deletions are committed (QUIT) at once.
"""

from __future__ import annotations

import poplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from postline import tls
from postline.auth import sasl
from postline.auth.credentials import Login, OAuthLogin, PasswordLogin
from postline.errors import AuthError, ConnectError, PostlineError, ProtocolError
from postline.protocols import net
from postline.protocols.base import Capabilities, MailboxReader
from postline.protocols.pop3_ops import MaildropOperations, _text
from postline.trace import NULL_TRACE, Trace


class _POP3OnSocket(poplib.POP3):
    """poplib.POP3 over a socket we connected (and maybe TLS-wrapped) ourselves."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._given_sock = sock
        super().__init__(host, port)

    def _create_socket(self, timeout: Any) -> socket.socket:  # poplib's own hook
        return self._given_sock


class Pop3Reader(MaildropOperations, MailboxReader):
    """:class:`MailboxReader` for a POP3 maildrop."""

    def __init__(self, *, endpoint: Any, login: Login, trace: Trace = NULL_TRACE,
                 poll_interval: float = 60.0) -> None:
        self.endpoint = endpoint
        self.host: str = endpoint.host
        self.port: int = endpoint.effective_port
        self._login = login
        self._trace = trace
        self._poll = poll_interval
        self._pop: _POP3OnSocket | None = None
        self._numbers: dict[str, int] = {}
        self._listed = False
        self.capabilities = Capabilities(folders=False, move=False, idle=False, flags=False)
        self.server_capabilities: dict[str, list[str]] = {}
        self.tls_info: dict[str, Any] | None = None

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        ep = self.endpoint
        sock = net.open_socket(ep, trace=self._trace)
        if isinstance(sock, ssl.SSLSocket):
            self.tls_info = tls.describe_session(sock, verified=ep.verify_identity,
                                                 certificate=self._trace.detailed)
        self._pop = net.greet(
            ep, sock, host=self.host, port=self.port, trace=self._trace, protocol="POP3",
            make=lambda: _POP3OnSocket(sock, self.host, self.port),
            welcome=lambda p: _text(p.welcome), protocol_errors=(poplib.error_proto,))
        sock.settimeout(ep.read_timeout)
        if ep.security == "starttls":
            self._stls()
        with self._trace.step("capabilities") as st:
            self.server_capabilities = self._capa()
            st.detail = " ".join(self.server_capabilities)
            st.data = {"capabilities": self.server_capabilities}
        self._authenticate()
        self.capabilities = Capabilities(folders=False, move=False, idle=False, flags=False,
                                         raw=tuple(self.server_capabilities))

    def _capa(self) -> dict[str, list[str]]:
        pop = self._need()
        try:
            with self._errors("CAPA", translate_err=False):
                return {k.upper(): v for k, v in pop.capa().items()}
        except poplib.error_proto:
            return {}  # CAPA is optional (RFC 2449)

    def _stls(self) -> None:
        pop = self._need()

        def upgrade(ctx: ssl.SSLContext) -> ssl.SSLSocket:
            pop.stls(context=ctx)
            return pop.sock

        self.tls_info = net.starttls(
            self.endpoint, host=self.host, port=self.port, trace=self._trace, protocol="POP3",
            word="STLS", capabilities=self._capa, upgrade=upgrade,
            protocol_errors=(poplib.error_proto,), close=self.close)

    def _authenticate(self) -> None:
        login, pop = self._login, self._need()
        if login is None:
            return
        what = "password" if isinstance(login, PasswordLogin) else "OAuth token"
        net.check_auth_allowed(self.endpoint, encrypted=self.endpoint.security != "none",
                               what=what)
        mechs = {m.upper() for m in self.server_capabilities.get("SASL", [])}
        with self._trace.step("authentication") as st:
            if isinstance(login, PasswordLogin):
                try:
                    with self._errors("login", translate_err=False):
                        if "PLAIN" in mechs:
                            self._plain(login)
                            st.detail = f"AUTH PLAIN as {login.user}"
                        else:
                            pop.user(login.user)
                            pop.pass_(login.password)
                            st.detail = f"USER/PASS as {login.user}"
                except poplib.error_proto as exc:
                    raise AuthError(f"POP3 login as {login.user} at {self.host}:{self.port} "
                                    f"failed: {_text(exc.args[0] if exc.args else exc)}",
                                    hint="check the user and the password in the Secret"
                                    ) from exc
            else:
                st.detail = self._oauth(login, mechs)

    def _plain(self, login: PasswordLogin) -> None:
        """RFC 5034 AUTH PLAIN with an initial response; raises poplib.error_proto when
        refused (an odd challenge after it is answered with an empty line)."""
        response = sasl.b64(sasl.plain(login.user, login.password)).decode()
        reply = self._auth_command(f"AUTH PLAIN {response}")
        while isinstance(reply, sasl.Challenge):
            reply = self._auth_command("")
        if not reply.ok:
            raise poplib.error_proto(reply.text)

    def _oauth(self, login: OAuthLogin, mechs: set[str]) -> str:
        dialogue = sasl.oauth_dialogue(offered=mechs, user=login.user, protocol="POP3",
                                       host=self.host, port=self.port)
        with self._errors("authentication", translate_err=False):
            mech = sasl.drive(
                dialogue,
                token=lambda refresh: login.provider.token(force_refresh=refresh),
                start=lambda step: self._auth_command(
                    f"AUTH {step.mechanism} {sasl.b64(step.response).decode()}"),
                answer=lambda data: self._auth_command(sasl.b64(data).decode() if data else ""))
        return f"AUTH {mech} as {login.user}"

    def _auth_command(self, line: str) -> sasl.Reply:
        """Send one line of an RFC 5034 AUTH exchange: a ``+ challenge`` is a Challenge,
        ``+OK`` and ``-ERR`` the Outcome."""
        try:
            reply = self._need()._shortcmd(line)
        except poplib.error_proto as exc:
            return sasl.Outcome(ok=False, text=_text(exc.args[0] if exc.args else exc))
        if reply.startswith(b"+ ") or reply == b"+":
            return sasl.Challenge(reply[2:])
        return sasl.Outcome(ok=True, text=_text(reply))

    def close(self) -> None:
        pop, self._pop = self._pop, None
        if pop is None:
            return
        try:
            pop.quit()
        except Exception:  # noqa: BLE001 - close never raises
            try:
                pop.close()
            except Exception:  # noqa: BLE001
                pass

    def _reconnect(self) -> None:
        self.close()
        self._numbers = {}
        self._listed = False
        self.connect()

    # -- errors ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str, *, translate_err: bool = True) -> Iterator[None]:
        try:
            yield
        except PostlineError:
            raise
        except TimeoutError as exc:
            self._pop = None  # a half-read answer leaves the session unusable
            raise net.translate_os_error(exc, host=self.host, port=self.port, phase=what,
                                         timeout=self.endpoint.read_timeout) from exc
        except (OSError, EOFError) as exc:
            self._pop = None
            raise ConnectError(f"lost the connection to POP3 server {self.host}:{self.port} "
                               f"during {what}: {exc}",
                               hint="it will be retried with a new connection") from exc
        except poplib.error_proto as exc:
            text = _text(exc.args[0] if exc.args else exc)
            if "EOF" in text:
                self._pop = None
                raise ConnectError(f"POP3 server {self.host}:{self.port} closed the "
                                   f"connection during {what}",
                                   hint="it will be retried with a new connection") from exc
            if not translate_err:
                raise
            raise ProtocolError(f"POP3 server {self.host}:{self.port} refused {what}: {text}",
                                disposition="fatal") from exc

    def _need(self) -> _POP3OnSocket:
        if self._pop is None:
            raise ConnectError(f"not connected to POP3 server {self.host}:{self.port}",
                               hint="open the reader with 'with' or call connect()")
        return self._pop
