"""postline's errors, grouped by what the runtime should do with them.

Every error postline raises derives from :class:`PostlineError`. Third-party exceptions
(imaplib, aiosmtplib, MSAL, httpx, ssl, socket) are translated at the boundary of the
adapter that called the library, with ``raise ... from exc`` so the cause is kept.

::

    PostlineError                       str(err) is one line a user can act on
    ├── ConfigError                     the project is wrong: fix the YAML, then rerun (fatal)
    │   ├── ValidationFailed            carries every Problem found in one run
    │   └── SecretError                 a secret cannot be read or decrypted (names the secret)
    ├── ConnectError                    could not reach or talk to a server
    │   ├── TLSError                    handshake failed, certificate untrusted, name mismatch
    │   ├── StartTLSUnavailable         security: starttls, but the server does not offer it
    │   └── ProtocolError               the server said something we cannot work with
    ├── AuthError                       the server or the authority refused the credentials (fatal)
    │   ├── InsecureAuthRefused         credentials would cross an unencrypted link
    │   └── TokenError                  OAuth token could not be obtained or was rejected
    │       └── LoginRequired           device flow: run ``postline login`` again
    ├── DeliveryError                   a mail was not accepted (``retriable`` says if trying again helps)
    ├── MessageError                    an EmailMessage is invalid (names the field); skippable
    ├── QueueFull                       SendAndForget: the bounded queue has no room; retriable
    └── ParseError                      a mail could not be turned into a record; skippable

Each class has a ``disposition``: ``"fatal"`` (stop and tell the user), ``"retriable"``
(back off and try again), or ``"skippable"`` (this item fails, the rest goes on).
Instances may override it (a 4xx DeliveryError is retriable, a 5xx is not).
"""

from __future__ import annotations

from typing import Literal

Disposition = Literal["fatal", "retriable", "skippable"]


class PostlineError(Exception):
    """Root of postline's errors. ``str(err)`` is a single line meant for the user."""

    disposition: Disposition = "fatal"

    def __init__(self, message: str, *, hint: str | None = None,
                 disposition: Disposition | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if disposition is not None:
            self.disposition = disposition

    @property
    def retriable(self) -> bool:
        return self.disposition == "retriable"

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(PostlineError):
    """The project configuration is invalid or incomplete."""


class ValidationFailed(ConfigError):
    """A project failed validation; ``problems`` holds every problem found."""

    def __init__(self, problems: list, message: str | None = None) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if getattr(p, "severity", "error") == "error"]
        super().__init__(message or f"project has {len(errors)} error(s)")


class SecretError(ConfigError):
    """A secret value cannot be resolved or decrypted."""


class ConnectError(PostlineError, ConnectionError):
    """Could not connect to, or keep talking to, a server. Usually worth retrying later."""

    disposition: Disposition = "retriable"


class TLSError(ConnectError):
    """TLS failed: wrong port kind, untrusted certificate, host name mismatch, old protocol."""

    disposition: Disposition = "fatal"


class StartTLSUnavailable(ConnectError):
    """``security: starttls`` was configured but the server does not offer STARTTLS."""

    disposition: Disposition = "fatal"


class ProtocolError(ConnectError):
    """The server answered something the protocol does not allow here."""


class ConnectTimeout(ConnectError, TimeoutError):
    """Connecting or reading timed out."""


class AuthError(PostlineError):
    """The server or the authority refused the credentials."""


class InsecureAuthRefused(AuthError):
    """Credentials would be sent over an unencrypted connection to a non-loopback host."""


class TokenError(AuthError):
    """An OAuth token could not be obtained, refreshed, or was rejected."""


class LoginRequired(TokenError):
    """Device flow has no usable refresh token: the user must run ``postline login``."""


class DeliveryError(PostlineError):
    """A mail was not accepted by the server. ``retriable`` tells whether a retry may help."""

    def __init__(self, message: str, *, code: int | None = None, retriable: bool = False,
                 hint: str | None = None, outcome: str | None = None) -> None:
        super().__init__(message, hint=hint,
                         disposition="retriable" if retriable else "fatal")
        self.code = code
        # "rejected", "transient", "unknown" (connection lost after the final dot of DATA)
        self.outcome = outcome or ("transient" if retriable else "rejected")


class MessageError(PostlineError, ValueError):
    """An EmailMessage is invalid; ``field`` names the offending key."""

    disposition: Disposition = "skippable"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class QueueFull(PostlineError):
    """SendAndForget could not enqueue: the send queue is at its configured size."""

    disposition: Disposition = "retriable"


class ParseError(PostlineError):
    """A mail could not be turned into a record at all."""

    disposition: Disposition = "skippable"
