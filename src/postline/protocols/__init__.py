"""Protocol adapters behind two small interfaces (see ``base.py``), and their factories.

``open_reader(project, connection)`` -> :class:`MailboxReader` (IMAP, POP3 or Microsoft
Graph, not yet connected: use ``with``); ``open_sender(project, connection)`` ->
:class:`MailSender` (SMTP or Graph, connects lazily: ``async with`` or first ``send()``). ``connection`` is an
``EmailConnection`` model or its name. The project supplies secrets and the state dir for
the OAuth token cache (anything with ``secret``, ``seal``, ``open_sealed``, ``state_dir``).
"""

from __future__ import annotations

from typing import Any

from postline.errors import ConfigError
from postline.protocols.base import (
    Capabilities,
    Envelope,
    FolderInfo,
    FolderState,
    MailboxReader,
    MailSender,
    MessageRef,
    RawMessage,
    RecipientStatus,
    SendResult,
)
from postline.trace import NULL_TRACE, Trace

__all__ = ["open_reader", "open_sender", "endpoint_of", "MailboxReader", "MailSender",
           "Capabilities", "Envelope", "FolderInfo", "FolderState", "MessageRef",
           "RawMessage", "RecipientStatus", "SendResult"]

def _model(project: Any, connection: Any) -> Any:
    if isinstance(connection, str):
        return project.get("EmailConnection", connection)
    return connection


def endpoint_of(connection: Any, direction: str) -> Any:
    """The enabled ``incoming``/``outgoing`` endpoint, or ConfigError saying what to add."""
    if connection.type == "microsoft365":
        raise ConfigError(f"connection {connection.name!r} is a microsoft365 connection: it "
                          f"has no {direction} endpoint (Graph serves both directions)",
                          hint="settings of a microsoft365 connection live under "
                               "microsoft365:")
    ep = connection.endpoint(direction)
    if ep is None:
        raise ConfigError(f"connection {connection.name!r} has no {direction} direction",
                          hint=f"add an {direction} block with a protocol to the connection")
    return ep


def open_reader(project: Any, connection: Any, *, trace: Trace = NULL_TRACE
                ) -> MailboxReader:
    """A reader for the connection's incoming side (not connected yet).

    Raises ConfigError (no incoming side), SecretError (secret unreadable),
    TokenError/LoginRequired only later, when connecting.
    """
    from postline.auth.credentials import login_for

    conn = _model(project, connection)
    if conn.type == "microsoft365":
        from postline.protocols.graph import GraphReader, graph_session

        return GraphReader(session=graph_session(project, conn, trace=trace), trace=trace)
    ep = endpoint_of(conn, "incoming")
    login = login_for(project, connection=conn.name, direction="incoming", endpoint=ep)
    if ep.protocol == "imap":
        from postline.protocols.imap import ImapReader

        return ImapReader(endpoint=ep, login=login, trace=trace)
    if ep.protocol == "pop3":
        from postline.protocols.pop3 import Pop3Reader

        return Pop3Reader(endpoint=ep, login=login, trace=trace)
    raise ConfigError(f"connection {conn.name!r}: unknown incoming protocol {ep.protocol!r}")


def open_sender(project: Any, connection: Any, *, max_connections: int = 4,
                idle_timeout: float = 60.0, trace: Trace = NULL_TRACE) -> MailSender:
    """A sender for the connection's outgoing side (connects lazily).

    ``max_connections`` SMTP sessions are used in parallel at most; sessions unused for
    ``idle_timeout`` seconds are closed. Raises ConfigError, SecretError.
    """
    from postline.auth.credentials import login_for
    from postline.protocols.smtp import SmtpSender

    conn = _model(project, connection)
    if conn.type == "microsoft365":
        from postline.protocols.graph import graph_session
        from postline.protocols.graph_send import GraphSender

        return GraphSender(session=graph_session(project, conn, trace=trace), trace=trace,
                           max_connections=max_connections)
    ep = endpoint_of(conn, "outgoing")
    login = login_for(project, connection=conn.name, direction="outgoing", endpoint=ep)
    return SmtpSender(endpoint=ep, login=login, max_connections=max_connections,
                      idle_timeout=idle_timeout, trace=trace)
