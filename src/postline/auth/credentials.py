"""Turning a direction's ``credential`` into something an adapter can log in with.

Adapters never see Secret assets or MSAL: they receive a :data:`Login` -- ``None``, a
:class:`PasswordLogin`, or an :class:`OAuthLogin` whose provider hands out access tokens
(cached in memory for the process, refreshed ahead of expiry; see ``postline.auth.oauth``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from postline.errors import ConfigError
from postline.logs import register_secret


@runtime_checkable
class SecretSource(Protocol):
    """What the credential code needs from a project (``postline.project.Project`` fits)."""

    @property
    def state_dir(self) -> Path: ...

    def secret(self, ref: Any) -> str: ...

    def seal(self, value: bytes) -> str: ...

    def open_sealed(self, text: str) -> bytes: ...


@runtime_checkable
class TokenProvider(Protocol):
    """Hands out OAuth access tokens for one credential."""

    def token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; ``force_refresh`` skips the in-memory copy (used once after
        the server rejected a token). Raises TokenError / LoginRequired."""
        ...

    @property
    def description(self) -> str:
        """Where tokens come from, for messages (never contains a secret)."""
        ...


@dataclass(frozen=True, repr=False)
class PasswordLogin:
    """User name and password (``credential.type: secret``)."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"PasswordLogin(user={self.user!r}, password='***')"


@dataclass(frozen=True)
class OAuthLogin:
    """User name (the mailbox) and a token provider (``oauth_*`` credentials)."""

    user: str
    provider: TokenProvider


Login = PasswordLogin | OAuthLogin | None


def login_for(source: SecretSource, *, connection: str, direction: str, endpoint: Any) -> Login:
    """The :data:`Login` for ``endpoint.credential``.

    Raises ConfigError when ``user`` is missing, SecretError when a secret cannot be read.
    """
    cred = endpoint.credential
    if cred.type == "none":
        return None
    where = f"connection {connection!r} {direction}"
    if not endpoint.user:
        raise ConfigError(f"{where}: credential type {cred.type} needs 'user' (the mailbox "
                          "to log in as)", hint=f"add user: to {direction}")
    if cred.type == "secret":
        password = source.secret(cred.secret)
        register_secret(password)
        return PasswordLogin(user=endpoint.user, password=password)
    from postline.auth.oauth import provider_for

    return OAuthLogin(user=endpoint.user, provider=provider_for(
        source, connection=connection, direction=direction, credential=cred,
        ca_file=endpoint.ca_file, verify=endpoint.verify_identity,
        timeout=endpoint.connect_timeout))


class StaticToken:
    """A fixed token (tests, or a token handed in by the caller)."""

    def __init__(self, value: str, *, description: str = "a fixed token") -> None:
        register_secret(value)
        self._value = value
        self._description = description

    def token(self, *, force_refresh: bool = False) -> str:
        return self._value

    @property
    def description(self) -> str:
        return self._description

    def __repr__(self) -> str:
        return f"StaticToken({self._description!r})"
