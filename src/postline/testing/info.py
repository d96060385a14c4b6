"""What a running local mail stack offers to tests and users: :class:`StackInfo`, :class:`MailUser`.

``StackInfo`` is plain data (saved as ``stack.json`` in the stack directory) plus helpers that
talk to the stack the way a test would: approve a device-flow login, mint a token Dovecot
accepts, deliver a mail over LMTP.
"""

from __future__ import annotations

import dataclasses
import json
import re
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from postline.testing.errors import StackError

STATE_FILE = "stack.json"


def password_for(email: str) -> str:
    """The stack's password of ``email``: its local part followed by ``-pass``."""
    return email.split("@", 1)[0].lower() + "-pass"


@dataclass(frozen=True, kw_only=True)
class MailUser:
    """A mailbox of the stack. The password is kept out of ``repr``."""

    email: str
    password: str = field(repr=False)

    @classmethod
    def fresh(cls, prefix: str = "user") -> MailUser:
        """A user no test used before (unique local part), with its password."""
        email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.test"
        return cls(email=email, password=password_for(email))


@dataclass(frozen=True, kw_only=True)
class StackInfo:
    """Where a running stack listens and how to log in to it (see docs/dev-stack.md)."""

    host: str
    ports: dict[str, int]
    dir: Path
    ca_file: Path
    ca_key_file: Path
    oidc_issuer: str
    oidc_authority: str
    cc_client_id: str
    cc_client_secret: str = field(repr=False)  # a throwaway test value, but still no repr
    cc_mailbox: str
    device_client_id: str
    mail_scopes: tuple[str, ...]
    test_issuer: str
    hs256_key_file: Path
    hs256_kid: str
    access_token_ttl: int

    # ---- persistence -------------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-ready dict of every field (paths as strings)."""
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in data.items()}

    @classmethod
    def from_json(cls, data: dict) -> StackInfo:
        """The inverse of :meth:`to_json`. Raises KeyError/TypeError on a malformed dict."""
        paths = {f.name for f in dataclasses.fields(cls) if f.type in ("Path", Path)}
        kwargs = {k: (Path(v) if k in paths else v) for k, v in data.items()
                  if k in {f.name for f in dataclasses.fields(cls)}}
        kwargs["mail_scopes"] = tuple(kwargs["mail_scopes"])
        kwargs["ports"] = {k: int(v) for k, v in kwargs["ports"].items()}
        return cls(**kwargs)

    @classmethod
    def load(cls, stack_dir: Path) -> StackInfo | None:
        """The info saved by the last start in ``stack_dir``, or None when there is none."""
        try:
            return cls.from_json(json.loads((stack_dir / STATE_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ---- helpers -----------------------------------------------------------------------
    @staticmethod
    def password(email: str) -> str:
        """The password of ``email`` on this stack (``<local part>-pass``)."""
        return password_for(email)

    def mailbox_path(self, email: str) -> Path:
        """Dovecot's Maildir of ``email`` (it exists once the user logged in or got mail)."""
        return self.dir / "mail" / email.lower() / "Maildir"

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the stack's CA and checks host names."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def deliver(self, email: str, raw: bytes, *, sender: str = "stack@example.test") -> None:
        """Deliver ``raw`` (a complete RFC 5322 message) into the INBOX of ``email`` over LMTP.

        Raises StackError when Dovecot refuses it.
        """
        try:
            with smtplib.LMTP(self.host, self.ports["lmtp"], timeout=10) as lmtp:
                lmtp.sendmail(sender, [email], raw)
        except (smtplib.SMTPException, OSError) as exc:
            raise StackError(f"LMTP delivery to {email} on {self.host}:{self.ports['lmtp']} "
                             f"failed: {exc}") from exc

    def subjects(self, email: str, folder: str = "INBOX") -> list[str]:
        """Sorted subjects of the mails in ``folder`` of ``email`` (empty if the folder does
        not exist), read over IMAP without changing anything: for tests' assertions."""
        from imapclient import IMAPClient

        c = IMAPClient(self.host, port=self.ports["imap"], ssl=False, timeout=10)
        try:
            c.login(email, self.password(email))
            if not c.folder_exists(folder):
                return []
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["ENVELOPE"]) if uids else {}
            return sorted((d[b"ENVELOPE"].subject or b"").decode() for d in data.values())
        finally:
            c.logout()

    def mint_token(self, email: str, *, expired: bool = False, issuer: str | None = None,
                   key: str = "good", lifetime: int = 3600,
                   claims: dict | None = None) -> str:
        """An HS256 JWT for ``email`` from the stack's test issuer.

        Dovecot accepts it for that user, unless ``expired``, ``issuer`` is another issuer, or
        ``key="bad"`` (signed with a key Dovecot does not know). ``claims`` adds or replaces
        claims (e.g. ``{"appid": ..., "scope": ...}`` for the Graph test double). Returns the
        compact JWT.
        """
        import jwt  # PyJWT comes with MSAL

        if key not in ("good", "bad"):
            raise ValueError("key must be 'good' or 'bad'")
        now = int(time.time())
        start = now - 2 * lifetime if expired else now
        claims = {"iss": issuer or self.test_issuer, "sub": email, "email": email,
                  "aud": "https://mail.example.test", "iat": start, "nbf": start,
                  "exp": now - 60 if expired else now + lifetime,
                  "scope": " ".join(self.mail_scopes), **(claims or {})}
        secret = self.hs256_key_file.read_bytes() if key == "good" else uuid.uuid4().bytes * 2
        return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": self.hs256_kid})

    def approve_device(self, verification_uri_complete: str, *, login: str) -> None:
        """Approve a pending device-flow login as ``login`` (an email), like a user in a browser.

        Opens the verification URL (with ``&login=``) and submits the confirmation form over
        HTTPS, trusting only the stack's CA. Raises StackError when the server does not confirm.
        """
        import httpx

        parts = urlsplit(verification_uri_complete)
        user_code = parse_qs(parts.query).get("user_code", [""])[0]
        if not user_code:
            raise StackError(f"no user_code in the verification URL {verification_uri_complete}")
        url = parts._replace(query=urlencode({"user_code": user_code, "login": login})).geturl()
        with httpx.Client(verify=self.ssl_context(), trust_env=False, follow_redirects=True,
                          timeout=10) as client:
            try:
                page = client.get(url)
                xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
                action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
                if page.status_code != 200 or not xsrf:
                    raise StackError(f"device verification page {parts.path} answered "
                                     f"{page.status_code} without a confirmation form")
                done = client.post(action.group(1) if action else f"{self.oidc_issuer}/device",
                                   data={"xsrf": xsrf.group(1), "user_code": user_code,
                                         "confirm": "yes"})
            except httpx.HTTPError as exc:
                raise StackError(f"device approval at {self.oidc_issuer} failed: {exc}") from exc
        if done.status_code != 200 or "success" not in done.text.lower():
            raise StackError(f"device approval of code {user_code} as {login} was not "
                             f"confirmed (HTTP {done.status_code}); see {self.dir}/logs/oidc.log")
