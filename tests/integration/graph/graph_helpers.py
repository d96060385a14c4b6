"""Helpers of the Microsoft Graph tests: a stub project, connection data, test mails."""

from __future__ import annotations

import time
from email.message import EmailMessage

from postline.testing.stub_project import StubProject  # noqa: F401 - re-exported


def m365_data(stack, graph_url: str, *, credential: str, mailbox: str | None = None,
              name: str = "M365") -> dict:
    """A microsoft365 EmailConnection for the stack, as the YAML would say it."""
    if credential == "oauth_client_credentials":
        cred = {"type": credential, "authority": stack.oidc_authority,
                "client_id": stack.cc_client_id, "scopes": list(stack.mail_scopes),
                "client_secret": "GraphSecrets.client_secret"}
    else:
        cred = {"type": "oauth_device_flow", "authority": stack.oidc_authority,
                "client_id": stack.device_client_id, "scopes": list(stack.mail_scopes)}
    m = {"credential": cred, "graph_url": graph_url, "ca_file": str(stack.ca_file),
         "connect_timeout": 5, "read_timeout": 30}
    if mailbox:
        m["mailbox"] = mailbox
    return {"name": name, "type": "microsoft365", "microsoft365": m}


def make_mail(subject: str, *, to: str = "reader@example.test", body: str = "hello\n",
              attachment: bytes | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = "Zoë <zoe@example.test>"
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<g-{time.time_ns()}@example.test>"
    m.set_content(body)
    if attachment is not None:
        m.add_attachment(attachment, maintype="application", subtype="octet-stream",
                         filename="big.bin")
    return m.as_bytes()
