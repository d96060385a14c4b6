"""The one place that builds TLS contexts and turns ``ssl`` errors into plain words.

Every adapter (IMAP, POP3, SMTP) and the OAuth authority client get their
:class:`ssl.SSLContext` from :func:`client_context`: TLS 1.2 at least, the system trust
store plus the connection's optional ``ca_file``, and full chain + host name checks unless
``check_server_identity: false`` (then the link is still encrypted, and every connect logs a
warning via :func:`warn_unverified`).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import os
import ssl
from typing import Any

from postline.errors import ConfigError, TLSError

log = logging.getLogger("postline.tls")

# OpenSSL reasons seen when a TLS client talks to a plaintext (or STARTTLS) port: the
# server's plaintext greeting is read as a TLS record.
_PLAINTEXT_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                      "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "RECORD_LENGTH_MISMATCH",
                      "WRONG_SSL_VERSION", "UNEXPECTED_RECORD")
_UNTRUSTED_CODES = {2, 18, 19, 20, 21, 27, 28}  # self-signed, unknown issuer, untrusted ...


def client_context(*, verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """An SSLContext for clients: TLS >= 1.2, system store + ``ca_file``.

    With ``verify`` the chain and the host name are checked; without, the link is encrypted
    but anyone could be at the other end. Contexts are cached (loading the system store
    costs milliseconds). Raises ConfigError when ``ca_file`` cannot be read.
    """
    mtime = None
    if ca_file:
        try:
            mtime = os.stat(ca_file).st_mtime_ns
        except FileNotFoundError as exc:
            raise ConfigError(f"ca_file {ca_file} not found",
                              hint="fix the path in the connection's ca_file; a relative path "
                                   "is relative to the project directory") from exc
        except OSError as exc:
            raise ConfigError(f"ca_file {ca_file} cannot be read: {exc.strerror}",
                              hint="fix the path or the permissions of the connection's "
                                   "ca_file") from exc
    return _context(verify, ca_file, mtime)


@functools.lru_cache(maxsize=32)
def _context(verify: bool, ca_file: str | None, _mtime: int | None) -> ssl.SSLContext:
    capath = _system_ca_dir()
    ctx = (ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=capath) if capath
           else ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            # ssl's own words ("[X509: NO_CERTIFICATE_OR_CRL_FOUND] ...") carry no path
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise ConfigError(f"ca_file {ca_file} is not a PEM file of CA certificates "
                              f"({why})", hint="point the connection's ca_file at the CA's "
                              "certificate in PEM format (-----BEGIN CERTIFICATE-----)") from exc
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def warn_unverified(host: str, port: int) -> None:
    """Log the warning shown on every connect with ``check_server_identity: false``."""
    log.warning("TLS to %s:%s is encrypted but NOT verified (check_server_identity: false): "
                "anyone on the network path could impersonate the server", host, port)


def translate_ssl_error(exc: BaseException, *, host: str, port: int,
                        names: list[str] | None = None) -> TLSError:
    """A TLSError with plain words for an ``ssl`` failure during the handshake.

    ``names`` are the host names the server's certificate is valid for, where known (used
    for the host name mismatch message).
    """
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        if code in (62, 64):
            shown = ", ".join(names) if names else "other names"
            return TLSError(f"TLS to {where}: host name mismatch: certificate is for {shown}, "
                            f"not {host}", hint="connect using a name the certificate lists, "
                            "or fix the server's certificate")
        if code in _UNTRUSTED_CODES or code is None:
            return TLSError(f"TLS to {where}: certificate not trusted "
                            f"({getattr(exc, 'verify_message', exc)})",
                            hint="self-signed or private CA? set ca_file to the CA's PEM file")
        if code == 10:
            return TLSError(f"TLS to {where}: the server's certificate has expired",
                            hint="the server's administrator must renew it")
        return TLSError(f"TLS to {where}: certificate rejected: "
                        f"{getattr(exc, 'verify_message', exc)}",
                        hint="check the server's certificate, or set ca_file")
    reason = (getattr(exc, "reason", None) or str(exc)).upper().replace(" ", "_")
    if any(r in reason for r in _PLAINTEXT_REASONS):
        return TLSError(f"TLS handshake with {where} failed: the port seems to speak plaintext",
                        hint="security: tls on a STARTTLS/plain port? try security: starttls, "
                             "or the implicit-TLS port (993 IMAP, 995 POP3, 465 SMTP)")
    if "UNSUPPORTED_PROTOCOL" in reason or "VERSION_TOO_LOW" in reason:
        return TLSError(f"TLS handshake with {where} failed: the server only offers TLS "
                        "older than 1.2", hint="the server must be upgraded; postline "
                        "requires TLS 1.2 or newer")
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)) or "EOF" in reason:
        return TLSError(f"TLS handshake with {where} failed: the server closed the connection",
                        hint="is this a TLS port? security: tls needs the implicit-TLS port")
    return TLSError(f"TLS handshake with {where} failed: {exc}",
                    hint="check the port and security settings")


def certificate_names(der: bytes | None) -> list[str]:
    """The DNS names and IP addresses a DER certificate is valid for (empty if unknown)."""
    if not der:
        return []
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            return [str(a.value) for a in cn]
        return ([str(n) for n in san.get_values_for_type(x509.DNSName)]
                + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)])
    except Exception:  # diagnostics only: never fail because a certificate is odd
        return []


def describe_session(sslobj: Any, *, verified: bool, certificate: bool = True
                     ) -> dict[str, Any]:
    """Version, cipher and (with ``certificate``) certificate facts of an established TLS
    link, JSON-friendly. The certificate facts need ``cryptography`` (~35 ms to import),
    which a normal run, tracing nothing, does without."""
    info: dict[str, Any] = {"version": sslobj.version(), "verified": verified}
    cipher = sslobj.cipher()
    if cipher:
        info["cipher"] = cipher[0]
    der = sslobj.getpeercert(binary_form=True) if certificate else None
    if der:
        try:
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
            info["subject"] = cert.subject.rfc4514_string()
            info["issuer"] = cert.issuer.rfc4514_string()
            not_after = cert.not_valid_after_utc
            info["expires"] = not_after.isoformat()
            info["days_left"] = (not_after - dt.datetime.now(dt.UTC)).days
            info["names"] = certificate_names(der)
        except Exception:  # diagnostics only
            pass
    return info


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (credentials in plaintext are fine there)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def _system_ca_dir() -> str | None:
    """The system's hashed CA directory (Debian: /etc/ssl/certs), when there is one.

    Why: the default store loads the whole CA bundle file (~140 certificates) when the
    context is made, 20-40 ms at every start of postline on the bench machine; from the
    hashed directory OpenSSL reads only the CA a server's chain names, at the handshake.
    Same certificates either way. None (use the default store) when SSL_CERT_FILE or
    SSL_CERT_DIR says otherwise or the directory has no hash links."""
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return None
    capath = ssl.get_default_verify_paths().capath
    try:
        names = os.listdir(capath) if capath else []
    except OSError:
        return None
    return capath if any(n.endswith(".0") for n in names) else None
