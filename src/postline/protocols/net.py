"""Opening connections: DNS, TCP, TLS, each traced and each failure in plain words.

The synchronous adapters (IMAP, POP3) get their socket from :func:`open_socket` and hand it
to imaplib/poplib, so every failure before the greeting is translated here, once, and
``test-connection`` sees DNS, TCP and TLS as separate timed steps. The async SMTP adapter
uses :func:`translate_os_error` and :func:`wrap_failure` with its own asyncio connect.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Collection
from typing import Any, Protocol, TypeVar

from postline import tls
from postline.errors import (
    ConnectError,
    ConnectTimeout,
    InsecureAuthRefused,
    StartTLSUnavailable,
    TLSError,
)
from postline.protocols.tls_bio import BioContext
from postline.trace import NULL_TRACE, Trace


class EndpointLike(Protocol):
    """The fields of an ``Endpoint`` the network layer uses."""

    protocol: str
    host: str | None
    security: str
    ca_file: str | None
    connect_timeout: float
    read_timeout: float
    allow_insecure_auth: bool

    @property
    def effective_port(self) -> int: ...

    @property
    def verify_identity(self) -> bool: ...


def translate_os_error(exc: BaseException, *, host: str, port: int, phase: str = "connect",
                       timeout: float | None = None,
                       timeout_setting: str = "read_timeout") -> ConnectError:
    """A ConnectError naming ``host:port`` and the likely fix for a socket-level failure.

    ``timeout_setting`` names the connection field whose value ran out after the connect
    (``connect_timeout`` covers the TLS handshake and the greeting too).
    """
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve host name {host!r}: {exc.strerror or exc}",
                            hint="check the host name and DNS", disposition="fatal")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection to {where} refused: nothing is listening there",
                            hint="check host and port, and that the server is running")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        secs = f" after {timeout:g} s" if timeout else ""
        if phase == "connect":
            return ConnectTimeout(f"connecting to {where} timed out{secs}",
                                  hint="wrong host or port, or a firewall drops the packets? "
                                       "raise connect_timeout if the server is just slow")
        return ConnectTimeout(f"{where} did not answer{secs} while waiting for {phase}",
                              hint=f"the server is slow or stuck; raise {timeout_setting} if "
                                   "it is just slow")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError,
                        ConnectionAbortedError)):
        return ConnectError(f"{where} closed the connection during {phase}",
                            hint="the server dropped us; it will be retried")
    if isinstance(exc, ssl.SSLError):
        return tls.translate_ssl_error(exc, host=host, port=port)
    if isinstance(exc, OSError) and exc.strerror:
        return ConnectError(f"cannot connect to {where}: {exc.strerror}",
                            hint="check host, port and network")
    return ConnectError(f"connection to {where} failed during {phase}: {exc}")


# First lines of other services, so a wrong port is named instead of guessed at.
_GREETINGS = ((b"* OK", "an IMAP server"), (b"* PREAUTH", "an IMAP server"),
              (b"+OK", "a POP3 server"), (b"220", "an SMTP server"), (b"SSH-", "an SSH server"),
              (b"HTTP/", "a web server"))


def other_service(first_line: bytes | None) -> str | None:
    """Which kind of server greets with ``first_line`` ("an IMAP server", ...), or None."""
    if not first_line:
        return None
    return next((name for prefix, name in _GREETINGS if first_line.startswith(prefix)), None)


def no_greeting_error(*, host: str, port: int, timeout: float) -> ConnectError:
    """What to say when a plaintext connect gets no greeting: usually a TLS port."""
    return ConnectTimeout(f"no greeting from {host}:{port} within {timeout:g} s: the server "
                          "seems to expect TLS", hint="use security: tls (or the plaintext/"
                          "STARTTLS port: 143 IMAP, 110 POP3, 587 SMTP)")


def open_socket(ep: EndpointLike, *, trace: Trace = NULL_TRACE, bio: bool = False
                ) -> socket.socket:
    """Resolve, connect and (for ``security: tls``) handshake; the socket's timeout is set
    to ``connect_timeout`` so the caller can read the greeting with it. ``bio``: TLS over
    memory BIOs (protocols/tls_bio.py) for a bulk-fetch connection.

    Raises ConnectError / ConnectTimeout / TLSError with the likely fix.
    """
    host, port = ep.host or "", ep.effective_port
    with trace.step("dns") as st:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise translate_os_error(exc, host=host, port=port) from exc
        addrs = list(dict.fromkeys(info[4][0] for info in infos))
        st.detail = f"{host} -> {', '.join(addrs)}"
        st.data = {"addresses": addrs}
    with trace.step("tcp") as st:
        sock, last = None, None
        for family, type_, proto, _, addr in infos:
            s = socket.socket(family, type_, proto)
            s.settimeout(ep.connect_timeout)
            try:
                s.connect(addr)
                sock = s
                break
            except OSError as exc:
                s.close()
                last = exc
        if sock is None:
            assert last is not None
            raise translate_os_error(last, host=host, port=port,
                                     timeout=ep.connect_timeout) from last
        st.detail = f"connected to {addr[0]} port {port}"
    if ep.security == "tls":
        sock = wrap_tls(sock, ep, trace=trace, bio=bio)
    return sock


def wrap_tls(sock: socket.socket, ep: EndpointLike, *, trace: Trace = NULL_TRACE,
             step: str = "tls", bio: bool = False) -> ssl.SSLSocket:
    """Handshake on ``sock`` (implicit TLS, or after STARTTLS); translate failures."""
    host, port = ep.host or "", ep.effective_port
    with trace.step(step) as st:
        try:
            # inside the step: a bad ca_file shows as a failed TLS step, not elsewhere
            ctx = tls.client_context(verify=ep.verify_identity, ca_file=ep.ca_file)
        except BaseException:
            sock.close()
            raise
        try:
            wrapper = BioContext(ctx) if bio else ctx
            ssock = wrapper.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            names = probe_certificate_names(ep) if exc.verify_code in (62, 64) else None
            raise tls.translate_ssl_error(exc, host=host, port=port, names=names) from exc
        except (ssl.SSLError, ConnectionResetError) as exc:
            sock.close()
            raise tls.translate_ssl_error(exc, host=host, port=port) from exc
        except OSError as exc:
            sock.close()
            raise translate_os_error(exc, host=host, port=port, phase="the TLS handshake",
                                     timeout=ep.connect_timeout,
                                     timeout_setting="connect_timeout") from exc
        st.data = tls.describe_session(ssock, verified=ep.verify_identity,
                                       certificate=trace.detailed)
        st.detail = f"{st.data.get('version')} {st.data.get('cipher', '')}".strip() + (
            ", certificate verified" if ep.verify_identity else ", NOT verified")
    if not ep.verify_identity:
        tls.warn_unverified(host, port)
    return ssock


# The commands that turn a plaintext session into TLS, per protocol: (command, ok prefix).
_STARTTLS = {"imap": (b"a1 STARTTLS\r\n", b"a1 OK"), "pop3": (b"STLS\r\n", b"+OK"),
             "smtp": (b"STARTTLS\r\n", b"220")}


T = TypeVar("T")


def greet(ep: EndpointLike, sock: socket.socket, *, host: str, port: int, trace: Trace,
          protocol: str, make: Callable[[], T], welcome: Callable[[T], str],
          protocol_errors: tuple[type[BaseException], ...]) -> T:
    """The greeting step of IMAP and POP3: ``make()`` builds the library's client on the
    connected ``sock`` (which reads the greeting); ``welcome(client)`` is shown in the trace.

    Returns the client. Raises ConnectTimeout (no greeting: usually a TLS port spoken to in
    plaintext) or ConnectError (something else answered), after closing ``sock``.
    """
    with trace.step("greeting") as st:
        try:
            client = make()
        except TimeoutError as exc:
            sock.close()
            if ep.security != "tls":
                raise no_greeting_error(host=host, port=port, timeout=ep.connect_timeout) from exc
            raise translate_os_error(exc, host=host, port=port, phase="the greeting",
                                     timeout=ep.connect_timeout,
                                     timeout_setting="connect_timeout") from exc
        except (OSError, EOFError, UnicodeError, *protocol_errors) as exc:
            sock.close()
            hint = ("the server may expect TLS: use security: tls" if ep.security != "tls"
                    else f"is this an {protocol} port?" if protocol == "IMAP"
                    else f"is this a {protocol} port?")
            raise ConnectError(f"no valid {protocol} greeting from {host}:{port}: {exc}",
                               hint=hint) from exc
        st.detail = welcome(client)[:200]
    return client


def starttls(ep: EndpointLike, *, host: str, port: int, trace: Trace, protocol: str,
             word: str, capabilities: Callable[[], Collection[str]],
             upgrade: Callable[[ssl.SSLContext], ssl.SSLSocket],
             protocol_errors: tuple[type[BaseException], ...],
             close: Callable[[], None]) -> dict[str, Any]:
    """The STARTTLS step of IMAP (``word`` STARTTLS) and POP3 (STLS), with its trace steps.

    ``capabilities()`` lists what the server offers in plaintext (IMAP: a list of words;
    POP3: a dict of word -> arguments); the step keeps that value as it is, the same shape
    as the protocol's later capabilities step, which ``test-connection`` merges it with.
    ``upgrade(ctx)`` sends the command and returns the TLS socket. Never continues in
    plaintext. Returns the TLS session's description. Raises StartTLSUnavailable, TLSError, ConnectError (after
    ``close()``).
    """
    with trace.step("capabilities") as st:
        pre = capabilities()
        st.detail, st.data = f"before {word}: " + " ".join(pre), {"capabilities": pre}
    if word not in pre:
        close()
        also = "" if word == "STARTTLS" else f" ({word})"
        raise StartTLSUnavailable(
            f"{protocol} server {host}:{port} does not offer STARTTLS{also}; refusing to "
            "continue in plaintext",
            hint=f"use security: tls with port {DEFAULT_TLS_PORTS.get(protocol, 'of TLS')}, "
                 "or fix the server")
    ctx = tls.client_context(verify=ep.verify_identity, ca_file=ep.ca_file)
    with trace.step("starttls") as st:
        try:
            sock = upgrade(ctx)
        except ssl.SSLCertVerificationError as exc:
            close()
            names = probe_certificate_names(ep) if exc.verify_code in (62, 64) else None
            raise tls.translate_ssl_error(exc, host=host, port=port, names=names) from exc
        except ssl.SSLError as exc:
            close()
            raise tls.translate_ssl_error(exc, host=host, port=port) from exc
        except (OSError, *protocol_errors) as exc:
            close()
            raise ConnectError(f"{word} with {host}:{port} failed: {exc}",
                               hint="use security: tls, or check the server") from exc
        info = tls.describe_session(sock, verified=ep.verify_identity,
                                    certificate=trace.detailed)
        st.data = info
        st.detail = f"{info.get('version')} " + (
            "certificate verified" if ep.verify_identity else "NOT verified")
    if not ep.verify_identity:
        tls.warn_unverified(host, port)
    return info


DEFAULT_TLS_PORTS = {"IMAP": 993, "POP3": 995}


def probe_certificate_names(ep: EndpointLike) -> list[str] | None:
    """The names in the server's certificate, read over a second, unverified connection.

    Only used to explain a host name mismatch; returns None when it cannot be learned.
    """
    host, port = ep.host or "", ep.effective_port
    ctx = tls.client_context(verify=False)
    try:
        with socket.create_connection((host, port), timeout=ep.connect_timeout) as raw:
            if ep.security == "starttls":
                f = raw.makefile("rb")
                _read_reply(f, ep.protocol)
                if ep.protocol == "smtp":
                    raw.sendall(b"EHLO postline\r\n")
                    _read_reply(f, "smtp")
                cmd, ok = _STARTTLS[ep.protocol]
                raw.sendall(cmd)
                if not _read_reply(f, ep.protocol).startswith(ok):
                    return None
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                return tls.certificate_names(s.getpeercert(binary_form=True))
    except (OSError, KeyError):
        return None


def _read_reply(f, protocol: str) -> bytes:
    line = f.readline(4096)
    while protocol == "smtp" and line[3:4] == b"-":
        line = f.readline(4096)
    return line


def check_auth_allowed(ep: EndpointLike, *, encrypted: bool, what: str) -> None:
    """Refuse to send credentials in plaintext to a host other than this machine.

    Raises InsecureAuthRefused (saying how to allow it) unless the link is encrypted, the
    host is loopback, or the connection sets ``allow_insecure_auth: true``.
    """
    host = ep.host or ""
    if encrypted or ep.allow_insecure_auth or tls.is_loopback(host):
        return
    raise InsecureAuthRefused(
        f"refusing to send the {what} to {host}:{ep.effective_port} over an unencrypted "
        "connection", hint="use security: starttls or tls; or set allow_insecure_auth: true "
                           "on this direction if the network is trusted")


__all__ = ["TLSError", "open_socket", "wrap_tls", "translate_os_error", "check_auth_allowed",
           "no_greeting_error", "other_service", "probe_certificate_names"]
