"""Helpers of the connection tests: endpoints, a stub project, a private CA, device login."""

from __future__ import annotations

import ssl
from pathlib import Path

from postline.assets.kinds.connection import Incoming, Outgoing
from postline.auth import oauth
from postline.testing import certs


def incoming(**kw):
    kw.setdefault("protocol", "imap")
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("read_timeout", 10)
    return Incoming(**kw)


def outgoing(**kw):
    kw.setdefault("protocol", "smtp")
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("read_timeout", 10)
    return Outgoing(**kw)


class LocalCA:
    """A throwaway CA (apart from the stack's) for TLS fault servers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_file = root / "ca.pem"
        self.ca_key_file = root / "ca.key"
        certs.make_ca(ca_file=self.ca_file, ca_key_file=self.ca_key_file)

    def server_context(self, names: list[str]) -> ssl.SSLContext:
        stem = "-".join(names).replace(":", "_")
        cert, key = self.root / f"{stem}.pem", self.root / f"{stem}.key"
        if not cert.exists():
            certs.issue_cert(ca_file=self.ca_file, ca_key_file=self.ca_key_file, names=names,
                             cert_file=cert, key_file=key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx




class StubProject:
    """What the adapters need from a project: secrets, sealing, a state dir, connections.

    Stands in for ``postline.project.Project`` so these tests do not depend on the loader.
    """

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
        import base64

        return base64.b64encode(self._box.encrypt(value)).decode()

    def open_sealed(self, text: str) -> bytes:
        import base64

        return self._box.decrypt(base64.b64decode(text))

    def get(self, kind: str, name: str):
        assert kind == "EmailConnection"
        return self.connections[name]

    def add(self, data: dict):
        from postline.assets.kinds.connection import EmailConnection

        conn = EmailConnection.model_validate({"kind": "EmailConnection", **data})
        self.connections[conn.name] = conn
        return conn




PORT_KEYS = {("imap", "none"): "imap", ("imap", "starttls"): "imap", ("imap", "tls"): "imaps",
             ("pop3", "none"): "pop3", ("pop3", "starttls"): "pop3", ("pop3", "tls"): "pop3s",
             ("smtp", "none"): "smtp", ("smtp", "starttls"): "smtp", ("smtp", "tls"): "smtps"}


def endpoint_data(stack, *, protocol: str, security: str, credential: str, user: str,
                  **extra) -> dict:
    """One direction of an EmailConnection for the stack, as the YAML would say it."""
    data = {"protocol": protocol, "host": stack.host,
            "port": stack.ports[PORT_KEYS[(protocol, security)]], "security": security,
            "ca_file": str(stack.ca_file), "user": user, "connect_timeout": 5,
            "read_timeout": 20}
    if credential == "secret":
        data["credential"] = {"type": "secret", "secret": "MailSecrets.password"}
    elif credential == "oauth_client_credentials":
        data["credential"] = {"type": credential, "authority": stack.oidc_authority,
                              "client_id": stack.cc_client_id,
                              "scopes": list(stack.mail_scopes),
                              "client_secret": "MailSecrets.client_secret"}
    elif credential == "oauth_device_flow":
        data["credential"] = {"type": credential, "authority": stack.oidc_authority,
                              "client_id": stack.device_client_id,
                              "scopes": list(stack.mail_scopes)}
    else:
        data["credential"] = {"type": "none"}
    data.update(extra)
    return data


def device_login(project, stack, *, connection: str, direction: str, user: str) -> str:
    """Complete ``postline login`` for one direction as ``user``; returns the account name.

    Drops the in-memory providers afterwards, so later use reads the sealed cache file.
    """
    conn = project.get("EmailConnection", connection)
    ep = conn.endpoint(direction)
    provider = oauth.provider_for(project, connection=connection, direction=direction,
                                  credential=ep.credential, ca_file=ep.ca_file,
                                  verify=ep.verify_identity, timeout=ep.connect_timeout)
    account = provider.login(lambda flow: stack.approve_device(
        flow["verification_uri_complete"], login=user))
    oauth.forget_providers()
    return account
