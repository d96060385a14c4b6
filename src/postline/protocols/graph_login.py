"""Signing in to Microsoft Graph: the token provider of a microsoft365 connection, the
device-flow login (``postline login``), and the :class:`GraphSession` a reader or sender
uses, limited per app (client id).

A person who signs in (device flow) and names a mailbox that may be someone else's needs
the delegated ``Mail.ReadWrite.Shared`` / ``Mail.Send.Shared`` scopes *and* Exchange
permissions on that mailbox (https://learn.microsoft.com/en-us/graph/outlook-share-messages-folders);
:func:`warn_delegation` says so when the scopes are missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from postline.errors import ConfigError, LoginRequired
from postline.protocols.graph_http import GraphSession
from postline.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.graph")

GRAPH_DIRECTION = "microsoft365"   # the token cache name of Graph logins (one for both uses)
SHARED_SCOPES = ("mail.readwrite.shared", "mail.send.shared")
_WARNED: set[tuple[str, str]] = set()   # once per connection and mailbox in a process


def graph_provider(project: Any, conn: Any) -> Any:
    """The process-wide token provider of a microsoft365 connection (MSAL, see
    ``postline.auth.oauth``); device-flow tokens are cached under the name ``microsoft365``.
    Raises SecretError when the client secret cannot be read."""
    from postline.auth.oauth import provider_for

    m = conn.microsoft365
    return provider_for(project, connection=conn.name, direction=GRAPH_DIRECTION,
                        credential=m.credential, ca_file=m.ca_file,
                        verify=m.check_server_identity, timeout=m.connect_timeout)


class _SavedLoginFirst:
    """A device-flow provider that says "run postline login" before it builds an MSAL app:
    building one for a Microsoft authority already talks to the network."""

    def __init__(self, provider: Any, *, path: Path, connection: str, root: Any) -> None:
        self._provider, self._path = provider, path
        self._connection, self._root = connection, root or "PROJECT"

    def token(self, *, force_refresh: bool = False) -> str:
        if not self._path.exists():
            raise LoginRequired(f"no saved login for connection {self._connection!r} "
                                "(microsoft365)", hint=f"run 'postline login {self._root} "
                                f"{self._connection}' first")
        return self._provider.token(force_refresh=force_refresh)

    @property
    def description(self) -> str:
        return self._provider.description


def login(project: Any, conn: Any, show: Callable[[dict], None]) -> tuple[str, Path]:
    """Run the device flow for a microsoft365 connection (what ``postline login`` does):
    ``show(flow)`` displays link and code. Returns the account name and the sealed token
    cache's path. Raises ConfigError for client credentials, TokenError."""
    from postline.auth.oauth import forget_providers
    from postline.state.token_cache import cache_path

    if conn.microsoft365.credential.type != "oauth_device_flow":
        raise ConfigError(f"connection {conn.name!r} uses client credentials",
                          hint="only device-flow credentials need 'postline login'")
    forget_providers()
    account = graph_provider(project, conn).login(show)
    forget_providers()
    return account, cache_path(project.state_dir, conn.name, GRAPH_DIRECTION)


def graph_session(project: Any, conn: Any, *, trace: Trace = NULL_TRACE) -> GraphSession:
    """A :class:`GraphSession` for the connection's mailbox (``/me`` without one); its
    requests share the limiter of the connection's app (client id)."""
    from postline.state.token_cache import cache_path

    m = conn.microsoft365
    provider = graph_provider(project, conn)
    if m.credential.type == "oauth_device_flow":
        provider = _SavedLoginFirst(
            provider, path=cache_path(project.state_dir, conn.name, GRAPH_DIRECTION),
            connection=conn.name, root=getattr(project, "root", None))
        warn_delegation(conn.name, m.mailbox, m.credential.scopes)
    return GraphSession(graph_url=m.graph_url, mailbox=m.mailbox,
                        provider=provider, ca_file=m.ca_file,
                        verify=m.check_server_identity, connect_timeout=m.connect_timeout,
                        read_timeout=m.read_timeout, trace=trace,
                        app=m.credential.client_id,
                        max_concurrent=getattr(m, "max_concurrent_requests", 4))


def warn_delegation(name: str, mailbox: str | None, scopes: Iterable[str]) -> bool:
    """Log a warning when a device-flow connection names a mailbox (maybe someone else's)
    but its scopes lack ``Mail.ReadWrite.Shared`` / ``Mail.Send.Shared``: a delegate needs
    them *and* Exchange permissions on that mailbox
    (https://learn.microsoft.com/en-us/graph/outlook-share-messages-folders). Logged once
    per connection and mailbox in a process; returns whether the scopes are missing."""
    if not mailbox:
        return False
    have = {s.rsplit("/", 1)[-1].lower() for s in scopes}
    missing = [s for s in SHARED_SCOPES if s not in have]
    if not missing:
        return False
    if (name, mailbox.lower()) in _WARNED:
        return True
    _WARNED.add((name, mailbox.lower()))
    log.warning("connection %r signs in a person but names mailbox %s: if that is not the "
                "person's own mailbox, Graph needs the delegated scope(s) %s and Exchange "
                "permissions on it (see docs/microsoft365.md, 'Another person's mailbox')",
                name, mailbox, " and ".join({"mail.readwrite.shared": "Mail.ReadWrite.Shared",
                                             "mail.send.shared": "Mail.Send.Shared"}[s]
                                            for s in missing))
    return True
