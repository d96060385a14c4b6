"""Which store holds a project's state: SQLite files in the state directory (the default),
or the PostgreSQL of its ``StateStore`` of ``type: postgresql`` (docs/cluster.md).

Callers (``run``, ``ledger``, the console) ask here and get the :class:`Ledger` interface;
none of them knows which engine is behind it.
"""

from __future__ import annotations

from typing import Any

from postline.state.ledger import Ledger


def shared_store(project: Any) -> Any | None:
    """The project's StateStore model when it is ``type: postgresql``, else None."""
    assets = getattr(project, "assets", None)
    stores = assets("StateStore") if callable(assets) else []   # (test doubles: no assets())
    return stores[0] if stores and stores[0].type == "postgresql" else None


def open_ledger(project: Any, *, read_only: bool = False, fence: Any = None) -> Ledger:
    """The project's ledger: PostgreSQL with a postgresql StateStore (its schema migrated
    unless ``read_only``), else the SQLite file. ``fence`` (PostgreSQL only) refuses writes
    for sources this instance no longer leases. Raises ConfigError, ConnectError,
    AuthError (one line naming the StateStore or the file)."""
    if shared_store(project) is not None:
        from postline.state.pg_ledger import open_pg_ledger

        return open_pg_ledger(project, read_only=read_only, fence=fence)
    from postline.state.ledger import SqliteLedger, ledger_path

    return SqliteLedger(path=ledger_path(project.state_dir), read_only=read_only)


def open_outbox(project: Any, *, clock: Any = None) -> Any:
    """The project's outbox: PostgreSQL (shared by the fleet) with a postgresql
    StateStore, else ``outbox.sqlite`` in the state directory. Raises ConfigError,
    ConnectError, AuthError."""
    import time

    clock = clock or time.time
    if shared_store(project) is not None:
        from postline.state.pg_ledger import ensure_schema
        from postline.state.pg_outbox import PostgresOutbox
        from postline.state.postgres import open_pool, target_of

        target = target_of(project)
        ensure_schema(target)
        return PostgresOutbox(pool=open_pool(target, max_size=4, name="postline-outbox"),
                              schema=target.schema, clock=clock)
    from postline.state.outbox import Outbox, outbox_path

    return Outbox(outbox_path(project.state_dir), clock=clock)


def delivery_parts(project: Any, service: str, *, outbox: Any, limit: int | None,
                   window: float, clock: Any) -> tuple[Any, Any] | None:
    """(lock, throttle) of ``service`` for a fleet's outbox (every instance delivers, the
    throttle holds for all of them), or None for the SQLite outbox (an flock and a
    window in this process)."""
    from postline.state.pg_outbox import FleetLock, FleetWindow, PostgresOutbox

    if not isinstance(outbox, PostgresOutbox):
        return None
    return FleetLock(), FleetWindow(pool=outbox.pool, schema=shared_store(project).schema_name,
                                    service=service, limit=limit, window=window, clock=clock)
