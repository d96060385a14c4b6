"""EmailConnection: the seed document, field by field.

::

    kind: EmailConnection
    name: Mailbox
    type: standard                     # standard | microsoft365
    incoming:
      protocol: imap                   # imap | pop3 | none
      host: imap.example.com
      port: 993                        # optional: default follows protocol and security
      user: me@example.com
      security: tls                    # none | starttls | tls
      check_server_identity: true      # default true
      ca_file: /etc/ssl/private-ca.pem # optional
      connect_timeout: 15              # seconds
      read_timeout: 60
      allow_insecure_auth: false       # allow credentials over plaintext to non-loopback
      credential: {type: secret, secret: MailSecrets.password}
    outgoing:
      protocol: smtp
      ...
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from postline.assets.kinds.base import (
    AssetModel,
    ConfigWarning,
    ProjectPath,
    SecretRef,
    field_error,
    register_kind,
)

__all__ = [
    "EmailConnection", "Endpoint", "Incoming", "Outgoing", "Microsoft365", "NoCredential",
    "SecretCredential", "OAuthClientCredentials", "OAuthDeviceFlow", "Credential",
    "OAuthCredential", "DEFAULT_PORTS", "ConfigWarning", "connection_warnings",
]

Security = Literal["none", "starttls", "tls"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class NoCredential(BaseModel):
    model_config = _STRICT
    type: Literal["none"]


class SecretCredential(BaseModel):
    """User from the direction's ``user``, password from a Secret key."""

    model_config = _STRICT
    type: Literal["secret"]
    secret: SecretRef


class OAuthClientCredentials(BaseModel):
    """App-only token: client id + client secret exchanged at the authority."""

    model_config = _STRICT
    type: Literal["oauth_client_credentials"]
    authority: str
    client_id: str
    scopes: list[str] = Field(min_length=1)
    client_secret: SecretRef


class OAuthDeviceFlow(BaseModel):
    """A person approves once with ``postline login``; the refresh token is kept encrypted."""

    model_config = _STRICT
    type: Literal["oauth_device_flow"]
    authority: str
    client_id: str
    scopes: list[str] = Field(min_length=1)


Credential = Annotated[
    NoCredential | SecretCredential | OAuthClientCredentials | OAuthDeviceFlow,
    Field(discriminator="type"),
]
OAuthCredential = Annotated[
    OAuthClientCredentials | OAuthDeviceFlow, Field(discriminator="type")
]

# (protocol, security) -> port chosen when ``port`` is omitted
DEFAULT_PORTS: dict[tuple[str, str], int] = {
    ("imap", "none"): 143, ("imap", "starttls"): 143, ("imap", "tls"): 993,
    ("pop3", "none"): 110, ("pop3", "starttls"): 110, ("pop3", "tls"): 995,
    ("smtp", "none"): 25, ("smtp", "starttls"): 587, ("smtp", "tls"): 465,
}
_PLAINTEXT_PORTS = {143, 110, 587, 25}
_TLS_PORTS = {993, 995, 465}


class Endpoint(BaseModel):
    """One direction of a standard connection (incoming or outgoing)."""

    model_config = _STRICT

    protocol: str
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    security: Security = "tls"
    check_server_identity: bool | None = None
    ca_file: ProjectPath | None = None
    connect_timeout: float = Field(default=15.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    allow_insecure_auth: bool = False
    credential: Credential = Field(default_factory=lambda: NoCredential(type="none"))

    @model_validator(mode="after")
    def _host_required(self) -> Endpoint:
        if self.protocol != "none" and not self.host:
            raise field_error("host", f"is required when protocol is {self.protocol}")
        return self

    def shown_defaults(self) -> dict[str, tuple[Any, str]]:
        """Omitted fields whose effective value ``postline show`` explains: name -> (value, why)."""
        out: dict[str, tuple[Any, str]] = {}
        if self.enabled and self.port is None:
            out["port"] = (self.effective_port, f"default for {self.protocol} + {self.security}")
        if self.check_server_identity is None:
            out["check_server_identity"] = (
                self.verify_identity,
                "default" if self.security != "none" else "default; unused with security: none")
        return out

    @property
    def enabled(self) -> bool:
        return self.protocol != "none"

    @property
    def effective_port(self) -> int:
        """The configured port, or the default for this protocol and security."""
        if self.port is not None:
            return self.port
        return DEFAULT_PORTS[(self.protocol, self.security)]

    @property
    def port_is_default(self) -> bool:
        """True when no ``port`` is set, so :attr:`effective_port` is the protocol's default."""
        return self.port is None

    @property
    def verify_identity(self) -> bool:
        """Whether the certificate chain and host name are checked (default: yes)."""
        return True if self.check_server_identity is None else self.check_server_identity


class Incoming(Endpoint):
    protocol: Literal["imap", "pop3", "none"] = "imap"


class Outgoing(Endpoint):
    protocol: Literal["smtp", "none"] = "smtp"


class Microsoft365(BaseModel):
    """Microsoft Graph: only OAuth credentials; ``mailbox`` is the user whose mail is used."""

    model_config = _STRICT

    mailbox: str | None = None
    credential: OAuthCredential
    graph_url: str = "https://graph.microsoft.com/v1.0"
    ca_file: ProjectPath | None = None
    check_server_identity: bool = True
    connect_timeout: float = Field(default=15.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    # Outlook's limit is 4 concurrent requests per app (see docs/microsoft365.md); shared by
    # every mailbox this app reaches from this process
    max_concurrent_requests: int = Field(default=4, ge=1, le=16)

    @model_validator(mode="after")
    def _mailbox_for_app_only(self) -> Microsoft365:
        if self.credential.type == "oauth_client_credentials" and not self.mailbox:
            raise field_error("mailbox", "is required with oauth_client_credentials "
                              "(an app-only token has no user of its own)")
        return self


@register_kind
class EmailConnection(AssetModel):
    kind: Literal["EmailConnection"]
    type: Literal["standard", "microsoft365"] = "standard"
    incoming: Incoming | None = None
    outgoing: Outgoing | None = None
    microsoft365: Microsoft365 | None = None

    @model_validator(mode="after")
    def _shape(self) -> EmailConnection:
        if self.type == "standard":
            if self.microsoft365 is not None:
                raise field_error("microsoft365",
                                  "is only allowed with type: microsoft365 (type is standard)")
            if not ((self.incoming and self.incoming.enabled)
                    or (self.outgoing and self.outgoing.enabled)):
                raise ValueError("at least one of incoming or outgoing must have a protocol "
                                 "other than none")
        else:
            for direction in ("incoming", "outgoing"):
                if getattr(self, direction) is not None:
                    raise field_error(direction, "is not used with type: microsoft365 "
                                      "(put mailbox and credential under microsoft365)")
            if self.microsoft365 is None:
                raise field_error("microsoft365", "is required with type: microsoft365 "
                                  "(mailbox and credential)")
        return self

    def endpoint(self, direction: Literal["incoming", "outgoing"]) -> Endpoint | None:
        """The enabled endpoint for ``direction``, or None."""
        ep = getattr(self, direction)
        return ep if ep is not None and ep.enabled else None

    def config_warnings(self) -> list[ConfigWarning]:
        return connection_warnings(self)


def connection_warnings(conn: EmailConnection) -> list[ConfigWarning]:
    """Warnings for a valid connection: contradictory port/security, useless identity checks."""
    out: list[ConfigWarning] = []
    for direction in ("incoming", "outgoing"):
        ep: Endpoint | None = getattr(conn, direction)
        if ep is None or not ep.enabled:
            continue
        if ep.port is not None:
            if ep.security == "tls" and ep.port in _PLAINTEXT_PORTS:
                out.append(ConfigWarning(
                    f"{direction}.port",
                    f"port {ep.port} is normally plaintext or STARTTLS but security is tls; "
                    f"did you mean security: starttls, or port "
                    f"{DEFAULT_PORTS[(ep.protocol, 'tls')]}?"))
            if ep.security == "starttls" and ep.port in _TLS_PORTS:
                out.append(ConfigWarning(
                    f"{direction}.port",
                    f"port {ep.port} normally speaks implicit TLS but security is starttls; "
                    f"did you mean security: tls, or port "
                    f"{DEFAULT_PORTS[(ep.protocol, 'starttls')]}?"))
        if ep.security == "none" and ep.check_server_identity is not None:
            out.append(ConfigWarning(
                f"{direction}.check_server_identity",
                "check_server_identity has no effect with security: none (nothing is encrypted)"))
        if ep.security != "none" and ep.check_server_identity is False:
            out.append(ConfigWarning(
                f"{direction}.check_server_identity",
                "the connection is encrypted but the server is not verified (anyone on the path "
                "can impersonate it); prefer ca_file for a private certificate authority"))
        out.extend(_ca_file_warnings(direction, ep.ca_file, ep.security != "none"))
        if (ep.security == "none" and ep.credential.type != "none"
                and not _is_loopback(ep.host) and not ep.allow_insecure_auth):
            out.append(ConfigWarning(
                f"{direction}.security",
                f"credentials would cross the network unencrypted to {ep.host}; postline refuses "
                "to log in unless security is starttls or tls (or allow_insecure_auth: true)"))
    m365 = conn.microsoft365
    if m365 is not None:
        out.extend(_ca_file_warnings("microsoft365", m365.ca_file, True))
    if m365 is not None and not m365.check_server_identity:
        out.append(ConfigWarning(
            "microsoft365.check_server_identity",
            "the connection is encrypted but the server is not verified"))
    return out


def _ca_file_warnings(where: str, ca_file: str | None, encrypted: bool) -> list[ConfigWarning]:
    """A warning when ``ca_file`` is not a readable file here.

    A warning, not an error: like a ``file:`` secret, the CA file may exist only on the
    host that runs postline (a mounted volume), while ``validate`` runs elsewhere (CI).
    """
    if not ca_file:
        return []
    field = f"{where}.ca_file"
    if not encrypted:
        return [ConfigWarning(field, "ca_file has no effect with security: none "
                                     "(nothing is encrypted)")]
    if not os.path.exists(ca_file):
        return [ConfigWarning(field, f"ca_file {ca_file} not found here; connecting will fail "
                                     "unless it exists on the host that runs postline "
                                     "(a relative path is relative to the project directory)")]
    if not os.path.isfile(ca_file) or not os.access(ca_file, os.R_OK):
        return [ConfigWarning(field, f"ca_file {ca_file} is not a readable file")]
    return []


def _is_loopback(host: str | None) -> bool:
    return host in ("localhost", "::1") or bool(host and host.startswith("127."))
