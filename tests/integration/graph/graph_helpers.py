"""Helpers of the Microsoft Graph tests: a stub project, connection data, test mails."""

from __future__ import annotations

import base64
import time
from email.message import EmailMessage
from pathlib import Path


class StubProject:
    """What the adapters need from a project: secrets, sealing, state dir, connections."""

    def __init__(self, root: Path, secrets: dict[str, str] | None = None) -> None:
        import nacl.secret
        import nacl.utils

        self.root = root
        self.state_dir = root / ".postline-state"
        self.secrets = dict(secrets or {})
        self.connections: dict[str, object] = {}
        self._box = nacl.secret.SecretBox(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))

    def secret(self, ref) -> str:
        from postline.errors import SecretError

        try:
            return self.secrets[str(ref)]
        except KeyError:
            raise SecretError(f"secret {ref} is not set") from None

    def seal(self, value: bytes) -> str:
        return base64.b64encode(self._box.encrypt(value)).decode()

    def open_sealed(self, text: str) -> bytes:
        return self._box.decrypt(base64.b64decode(text))

    def get(self, kind: str, name: str):
        assert kind == "EmailConnection"
        return self.connections[name]

    def add(self, data: dict):
        from postline.assets.kinds.connection import EmailConnection

        conn = EmailConnection.model_validate({"kind": "EmailConnection", **data})
        self.connections[conn.name] = conn
        return conn


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
