"""Helpers of the Email Service integration tests: projects on disk, reading mail back."""

from __future__ import annotations

import email
import email.policy
import imaplib
from email.message import EmailMessage
from pathlib import Path

import postline
from postline.testing.waits import poll


def write_project(root: Path, *, host: str, port: int, security: str = "none",
                  user: str | None = None, password: str | None = None,
                  ca_file: str | None = None, service_extra: str = "") -> Path:
    """A project directory with EmailConnection ``Out`` and EmailService ``Notify``."""
    root.mkdir(parents=True, exist_ok=True)
    docs = []
    cred = "{type: none}"
    if password is not None:
        (root / "smtp-password").write_text(password)
        docs.append(f"kind: Secret\nname: MailSecrets\nvalues:\n"
                    f"  password: file:{root / 'smtp-password'}\n")
        cred = "{type: secret, secret: MailSecrets.password}"
    conn = (f"kind: EmailConnection\nname: Out\noutgoing:\n  protocol: smtp\n  host: {host}\n"
            f"  port: {port}\n  security: {security}\n  credential: {cred}\n")
    if user:
        conn += f"  user: {user}\n"
    if ca_file:
        conn += f"  ca_file: {ca_file}\n"
    docs.append(conn)
    docs.append("kind: EmailService\nname: Notify\nconnection: Out\n"
                "retry: {max_attempts: 3, min_backoff: 0.05, max_backoff: 0.2}\n" + service_extra)
    (root / "assets.yaml").write_text("---\n".join(docs))
    return root


def open_stack_project(root: Path, mail_stack, sender_user, **kw):
    """A loaded project that submits through the stack's Postfix as ``sender_user``."""
    write_project(root, host=mail_stack.host, port=mail_stack.ports["smtp"],
                  security="starttls", user=sender_user.email, password=sender_user.password,
                  ca_file=str(mail_stack.ca_file), **kw)
    return postline.open_project(root)


def read_inbox(mail_stack, user, *, count: int, timeout: float = 20.0) -> list[EmailMessage]:
    """Wait until ``user``'s INBOX holds ``count`` mails; return them parsed, oldest first."""
    def fetched() -> list[EmailMessage]:
        with imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"]) as imap:
            imap.starttls(ssl_context=mail_stack.ssl_context())
            imap.login(user.email, user.password)
            imap.select("INBOX", readonly=True)
            ids = imap.search(None, "ALL")[1][0].split()
            return [email.message_from_bytes(imap.fetch(i, "(RFC822)")[1][0][1],
                                             policy=email.policy.default) for i in ids]

    def enough() -> list[EmailMessage] | None:
        mails = fetched()
        return mails if len(mails) >= count else None

    out = poll(enough, timeout=timeout, interval=0.1) or fetched()
    assert len(out) >= count, f"only {len(out)} of {count} mails arrived in time"
    return out
