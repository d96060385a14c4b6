"""Helpers for the stack's smoke tests: SASL strings, bearer logins, waiting with a deadline."""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib

from postline.testing.info import StackInfo
from postline.testing.waits import eventually


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str) -> bytes:
    return f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, unverified."""
    def part(i: int) -> dict:
        seg = token.split(".")[i]
        return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    return part(0), part(1)


def imap_bearer_login(stack: StackInfo, user: str, token: str, *, mech: str = "XOAUTH2",
                      tls: bool = False) -> None:
    """Log in over IMAP with a bearer token; raises imaplib.IMAP4.error when refused."""
    encode = xoauth2 if mech == "XOAUTH2" else oauthbearer
    calls = []

    def respond(challenge: bytes) -> bytes:
        calls.append(challenge)
        # on failure the server sends a JSON error challenge that must be answered empty
        return encode(user, token) if len(calls) == 1 else b""

    if tls:
        conn = imaplib.IMAP4_SSL(stack.host, stack.ports["imaps"], ssl_context=stack.ssl_context(),
                                 timeout=10)
    else:
        conn = imaplib.IMAP4(stack.host, stack.ports["imap"], timeout=10)
    try:
        conn.authenticate(mech, respond)
        assert conn.state == "AUTH"
    finally:
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def smtp_bearer_login(stack: StackInfo, user: str, token: str) -> None:
    """AUTH XOAUTH2 on Postfix's implicit-TLS port; raises SMTPAuthenticationError when refused."""
    with smtplib.SMTP_SSL(stack.host, stack.ports["smtps"], context=stack.ssl_context(),
                          timeout=10) as smtp:
        smtp.ehlo()
        code, resp = smtp.docmd("AUTH", "XOAUTH2 " + base64.b64encode(xoauth2(user, token)).decode())
        if code == 334:  # error challenge (JSON); answer empty to get the final status
            code, resp = smtp.docmd("")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, resp)


def wait_for(condition, *, timeout: float = 10.0, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout``
    (:func:`postline.testing.waits.eventually`)."""
    return eventually(condition, timeout, what, interval=0.05)
