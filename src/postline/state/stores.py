"""Which store holds a project's state: SQLite files in the state directory (the default),
or the PostgreSQL of its ``StateStore`` of ``type: postgresql`` (docs/cluster.md).

Callers (``run``, ``ledger``, the console) ask here and get the :class:`Ledger` interface;
none of them knows which engine is behind it.
"""

from __future__ import annotations

from typing import Any

from postline.source.ledger import Ledger


def shared_store(project: Any) -> Any | None:
    """The project's StateStore model when it is ``type: postgresql``, else None."""
    stores = project.assets("StateStore") if hasattr(project, "assets") else []
    return stores[0] if stores and stores[0].type == "postgresql" else None


def open_ledger(project: Any, *, read_only: bool = False, fence: Any = None) -> Ledger:
    """The project's ledger: PostgreSQL with a postgresql StateStore (its schema migrated
    unless ``read_only``), else the SQLite file. ``fence`` (PostgreSQL only) refuses writes
    for sources this instance no longer leases. Raises ConfigError, ConnectError,
    AuthError (one line naming the StateStore or the file)."""
    if shared_store(project) is not None:
        from postline.state.pg_ledger import open_pg_ledger

        return open_pg_ledger(project, read_only=read_only, fence=fence)
    from postline.source.ledger import SqliteLedger, ledger_path

    return SqliteLedger(path=ledger_path(project.state_dir), read_only=read_only)
