"""Throwaway key material for the local mail stack: a CA, server certificates, JWT keys.

Everything here is for loopback tests only. Keys are made with ``cryptography`` (a dependency
of MSAL, so always installed with postline). EC P-256 keys for TLS because they are generated
in microseconds; RSA 2048 for the OAuth server's signing key because RS256 is what Entra ID
and oidc-provider use.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "postline dev stack CA"
_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True, kw_only=True)
class TLSFiles:
    """Paths of the stack's CA and server certificate (all PEM)."""

    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate clock skew


def make_ca(*, ca_file: Path, ca_key_file: Path) -> None:
    """Write a new self-signed CA certificate and its private key. Returns nothing."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now()).not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_key_file, _key_pem(key))
    _write_private(ca_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def issue_cert(*, ca_file: Path, ca_key_file: Path, names: list[str], cert_file: Path,
               key_file: Path) -> None:
    """Write a server certificate signed by the CA for ``names`` (DNS names or IP addresses).

    Tests use this to make certificates for a wrong host name. Raises ``ValueError`` when
    ``names`` is empty.
    """
    if not names:
        raise ValueError("issue_cert needs at least one DNS name or IP address")
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now()).not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_file, _key_pem(key))
    _write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_tls(tls_dir: Path) -> TLSFiles:
    """Create the CA and the server certificate (localhost, 127.0.0.1) unless they exist.

    Returns their paths. Kept across restarts so clients that trust the CA keep working.
    """
    files = TLSFiles(ca_file=tls_dir / "ca.pem", ca_key_file=tls_dir / "ca.key",
                     cert_file=tls_dir / "server.pem", key_file=tls_dir / "server.key")
    if not (files.ca_file.exists() and files.ca_key_file.exists()):
        make_ca(ca_file=files.ca_file, ca_key_file=files.ca_key_file)
        files.cert_file.unlink(missing_ok=True)
    if not (files.cert_file.exists() and files.key_file.exists()):
        issue_cert(ca_file=files.ca_file, ca_key_file=files.ca_key_file,
                   names=["localhost", "127.0.0.1"], cert_file=files.cert_file,
                   key_file=files.key_file)
    return files


def _b64url_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ensure_signing_key(*, jwk_file: Path, public_pem_file: Path, kid: str) -> None:
    """Keep one RSA signing key per stack: private JWK for the OAuth server, public PEM for Dovecot.

    The key survives restarts so tokens issued before a restart still validate.
    """
    if not jwk_file.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pn = key.private_numbers()
        jwk = {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
               "n": _b64url_int(pn.public_numbers.n), "e": _b64url_int(pn.public_numbers.e),
               "d": _b64url_int(pn.d), "p": _b64url_int(pn.p), "q": _b64url_int(pn.q),
               "dp": _b64url_int(pn.dmp1), "dq": _b64url_int(pn.dmq1),
               "qi": _b64url_int(pn.iqmp)}
        _write_private(jwk_file, json.dumps(jwk).encode())
    jwk = json.loads(jwk_file.read_text())

    def num(field: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(jwk[field] + "=="), "big")

    public = rsa.RSAPublicNumbers(num("e"), num("n")).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_private(public_pem_file, pem, 0o644)


def ensure_hmac_secret(path: Path) -> bytes:
    """The stack's HS256 test-issuer secret (created once). Returns the raw secret bytes."""
    if not path.exists():
        _write_private(path, secrets.token_bytes(32))
    return path.read_bytes()
