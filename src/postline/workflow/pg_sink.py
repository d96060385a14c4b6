"""The ``postgresql`` sink: one row per record in a table, exactly once.

::

    sinks:
      - {type: postgresql, table: mails}                       # the StateStore's database
      - {type: postgresql, table: mails, url: "postgresql://app@db/warehouse"}

The table is created if missing::

    key text PRIMARY KEY, source text, message_id text, subject text,
    received timestamptz, record jsonb, written_at timestamptz

In the StateStore's database (no ``url``) the batch's rows are written inside the ledger's
own transaction that records the mails ``done`` (with the lease check of a fleet): both or
neither, exactly once by construction, nothing staged. With a ``url`` (another database)
the rows are inserted and committed before the ledger's commit, ``ON CONFLICT (key) DO
NOTHING``: a mail processed again after a crash finds its row and leaves it.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from postline.errors import ConfigError, StorageError
from postline.protocols.base import RawMessage
from postline.workflow.sinks import Sink, Staged

COLUMNS = ("key text PRIMARY KEY, source text, message_id text, subject text, "
           "received timestamptz, record jsonb, written_at timestamptz NOT NULL DEFAULT now()")


def _table(name: str) -> sql.Composable:
    return sql.Identifier(*name.split(".", 1))


def _received(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _rows(records: list[dict[str, Any]]) -> list[tuple]:
    return [(r["key"], r.get("source"), r.get("message_id"), r.get("subject"),
             _received(r.get("received")), Jsonb(r)) for r in records]


def insert_rows(conn: psycopg.Connection, table: str, records: list[dict[str, Any]]) -> None:
    """Insert ``records`` into ``table`` on ``conn`` (in the caller's transaction); a key
    already there is left as it is."""
    with conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "INSERT INTO {} (key, source, message_id, subject, received, record) VALUES "
            "(%s,%s,%s,%s,%s,%s) ON CONFLICT (key) DO NOTHING").format(_table(table)),
            _rows(records))


def create_table(conn: psycopg.Connection, table: str) -> None:
    """Create ``table`` with the sink's columns unless it exists (``conn`` in autocommit
    mode or idle)."""
    # IF NOT EXISTS is not safe against a concurrent CREATE (two instances starting at
    # once: a unique violation in pg_type), so one creator at a time per table
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                     (f"postline-sink:{table}",))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + COLUMNS + ")").format(
            _table(table)))


class PostgresSink(Sink):
    """Rows in ``table``; with ``ledger`` (a PostgresLedger: the StateStore's database) in
    the ledger's transaction, else over ``conninfo`` (committed at :meth:`stage`)."""

    label = "postgresql"

    def __init__(self, *, table: str, conninfo: str | None = None, where: str = "",
                 ledger: Any = None) -> None:
        if conninfo is None and ledger is None:
            raise ConfigError(f"the postgresql sink of table {table} has no url and the "
                              "project has no postgresql StateStore",
                              hint="give the sink a url, or add a StateStore with type: "
                                   "postgresql")
        self.table = table
        self._conninfo = conninfo
        self._ledger = ledger
        self._where = where
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    @property
    def where(self) -> str:
        return f"the postgresql sink {self.table}" + (f" at {self._where}" if self._where
                                                      else "")

    def open(self) -> None:
        try:
            if self._ledger is not None:
                with self._ledger.pool.connection() as conn:
                    create_table(conn, self.table)
            else:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    create_table(conn, self.table)
        except psycopg.Error as exc:
            raise ConfigError(f"{self.where}: cannot create the table: "
                              f"{str(exc).strip().splitlines()[0]}",
                              hint="check the url and the role's privileges") from exc

    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        with self._lock:
            self._pending[record["key"]] = record

    def discard(self, key: str) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def stage(self) -> Staged:
        with self._lock:
            records, self._pending = list(self._pending.values()), {}
        if not records:
            return Staged()
        if self._ledger is not None:
            # written by the ledger's next commit of this source, in its transaction
            source = records[0].get("source") or ""
            self._ledger.attach(source, lambda conn: insert_rows(conn, self.table, records))
            return Staged(token=records)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo)
            with self._conn.transaction():
                insert_rows(self._conn, self.table, records)
        except psycopg.Error as exc:
            with self._lock:
                self._pending = {r["key"]: r for r in records} | self._pending
            raise StorageError(f"{self.where}: the rows were not written: "
                               f"{str(exc).strip().splitlines()[0]}",
                               hint="postline tries again") from exc
        return Staged(token=records)

    def unstage(self, staged: Staged) -> None:
        if staged.token:
            with self._lock:
                self._pending = {r["key"]: r for r in staged.token} | self._pending

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
