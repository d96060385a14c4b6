"""Constants and helpers shared by the asset tests (imported by name, no package)."""

from __future__ import annotations


def messages(project) -> list[str]:
    """Every problem as printed, with the project path cut off (``file:line: ...``)."""
    root = str(project.root) + "/"
    return [str(p).replace(root, "") for p in project.problems]


CONN = """
kind: EmailConnection
name: Mailbox
incoming:
  protocol: imap
  host: imap.example.com
  user: me@example.com
  credential:
    type: secret
    secret: MailSecrets.password
"""

SECRETS = """
kind: Secret
name: MailSecrets
values:
  password: env:MAIL_PASSWORD
"""
