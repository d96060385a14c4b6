"""Helpers of the connection tests: endpoints, a stub project, a private CA, device login."""

from __future__ import annotations

import ssl
from pathlib import Path

from postline.assets.kinds.connection import Incoming, Outgoing
from postline.auth import oauth
from postline.testing import certs
from postline.testing.stub_project import StubProject  # noqa: F401 - re-exported


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
