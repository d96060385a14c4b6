"""SASL encoders and decoders as pure functions, shared by IMAP, POP3 and SMTP.

Nothing here does I/O. Each encoder returns the *unencoded* client response (bytes); the
protocol adapter base64-encodes it where its protocol wants that (IMAP's imaplib does it
itself, SMTP and POP3 send ``base64(...)`` on the AUTH line).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass


def plain(user: str, password: str, *, authzid: str = "") -> bytes:
    """RFC 4616 PLAIN: ``authzid NUL user NUL password``."""
    return f"{authzid}\0{user}\0{password}".encode()


def xoauth2(user: str, token: str) -> bytes:
    """Google/Microsoft XOAUTH2: ``user=U ^A auth=Bearer T ^A ^A``."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def gs2_header(authzid: str | None) -> str:
    """RFC 5801 GS2 header without channel binding; ``=`` and ``,`` escaped in the authzid."""
    if not authzid:
        return "n,,"
    return "n,a=" + authzid.replace("=", "=3D").replace(",", "=2C") + ","


def oauthbearer(user: str, token: str, *, host: str | None = None,
                port: int | None = None) -> bytes:
    """RFC 7628 OAUTHBEARER: ``gs2-header ^A [host=H ^A port=P ^A] auth=Bearer T ^A ^A``."""
    parts = [gs2_header(user)]
    if host:
        parts.append(f"host={host}")
    if port:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {token}")
    return ("\x01".join(parts) + "\x01\x01").encode()


def b64(data: bytes) -> bytes:
    """Base64 without line breaks (``=`` for an empty response, as SMTP/POP3 initial
    responses require)."""
    return base64.b64encode(data) if data else b"="


@dataclass(frozen=True)
class OAuthFailure:
    """What the server said in its XOAUTH2/OAUTHBEARER error challenge."""

    status: str = ""
    scope: str = ""
    schemes: str = ""
    raw: str = ""

    def describe(self) -> str:
        bits = []
        if self.status:
            bits.append(f"status {self.status}")
        if self.scope:
            bits.append(f"scope needed: {self.scope}")
        return ", ".join(bits) or self.raw or "no details"


def decode_error_challenge(challenge: bytes | str) -> OAuthFailure:
    """Parse the base64 JSON error challenge (``{"status":"401","schemes":..,"scope":..}``).

    Accepts the challenge base64-encoded or already decoded; never raises.
    """
    if isinstance(challenge, str):
        challenge = challenge.encode("utf-8", "replace")
    data = challenge.strip()
    if data and not data.startswith(b"{"):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            pass
    text = data.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return OAuthFailure(raw=text[:200])
    if not isinstance(obj, dict):
        return OAuthFailure(raw=text[:200])
    return OAuthFailure(status=str(obj.get("status", "")), scope=str(obj.get("scope", "")),
                        schemes=str(obj.get("schemes", "")), raw=text[:200])


def choose_oauth_mechanism(offered: set[str] | frozenset[str]) -> str | None:
    """XOAUTH2 when offered (widest server support), else OAUTHBEARER, else None."""
    upper = {m.upper() for m in offered}
    for mech in ("XOAUTH2", "OAUTHBEARER"):
        if mech in upper:
            return mech
    return None
