"""The durable outbox: SendAndForget mails in SQLite, with their state and history.

One file per project, ``<state_dir>/outbox.sqlite`` (WAL, ``synchronous=FULL``: a commit is
on disk when it returns). Each row is one mail of one service::

    queued --> sending --> sent
       ^          |------> failed    (5xx, or transient failures past retry.max_attempts)
       |          |------> unknown   (connection lost after the final dot, or the process
       |          |                   stopped while the mail was in DATA: never resent
       |          v                   automatically, it may have been delivered)
       +------ queued (retry later: 4xx, connection lost before the end of DATA)

``sending`` is committed before the SMTP transaction starts, so after a crash a row in
``sending`` means "may have reached the server": :meth:`Outbox.recover` marks it
``unknown`` for the operator instead of risking a duplicate. ``postline outbox retry``
puts failed (or, explicitly by id, unknown) mails back to ``queued``.

Only one process at a time delivers a service's queued mails: the holder of the
:class:`postline.state.locks.ProcessLock` (an ``flock`` that the kernel releases when the
process dies). Other processes may enqueue; the holder picks their rows up.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from postline.errors import ConfigError, QueueFull
from postline.state.paths import outbox_path
from postline.state.sqlite import SqliteStore, migrate, refuse_newer, stored_version
from postline.state.states import OutboxState

__all__ = ["SCHEMA_VERSION", "STATES", "Outbox", "OutboxEntry", "OutboxState", "outbox_path"]

T = TypeVar("T")

# Version 1 kept its version in PRAGMA user_version; files since keep it in the meta table
# like the ledger (postline.state.sqlite.migrate reads either).
SCHEMA_VERSION = 1


STATES = tuple(OutboxState)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    state TEXT NOT NULL,
    message_id TEXT NOT NULL,
    date TEXT NOT NULL,
    message TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox (service, state, next_attempt_at, id);
"""


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    service: str
    state: str
    message_id: str
    date: str
    message: dict[str, Any]
    summary: str
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    reason: str
    result: dict[str, Any] | None

    def to_json(self, *, with_message: bool = False) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("id", "service", "state", "message_id", "summary",
                                              "attempts", "created_at", "updated_at", "reason",
                                              "result")}
        if with_message:
            out["message"] = self.message
        return out


class Outbox:
    """Thread-safe access to ``outbox.sqlite``. Every method commits before it returns.

    Raises ConfigError when the file cannot be opened or has a newer schema.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 read_only: bool = False) -> None:
        """Open (and create) the outbox at ``path``; ``read_only`` opens an existing one for
        looking only (the web console), never creating or changing it."""
        self.path = Path(path)
        self._clock = clock
        try:
            # whole outgoing messages: 0600, dir 0700
            self._store = SqliteStore.open(path=self.path, what="the outbox",
                                           read_only=read_only, separate_reader=False,
                                           write_hint="nothing was queued")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"cannot open the outbox {self.path}: {exc}") from exc
        try:
            if read_only:
                found = stored_version(self._store.db)
            else:
                found = migrate(self._store.db, version=SCHEMA_VERSION, upgrade=_create)
            refuse_newer(found=found, knows=SCHEMA_VERSION, what="outbox", path=self.path)
        except (sqlite3.Error, ConfigError) as exc:
            self._store.close()  # nobody else holds it: the constructor failed
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot open the outbox {self.path}: {exc}") from exc

    def close(self) -> None:
        self._store.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # disk full, I/O error, read-only: the store raises StorageError naming the cause
        # (the mail is NOT stored), never "cannot rollback"
        with self._store.write() as db:
            return fn(db)

    def enqueue(self, *, service: str, message: dict[str, Any], message_id: str, date: str,
                summary: str, limit: int) -> int:
        """Store a queued mail and return its id.

        Raises QueueFull when ``service`` already holds ``limit`` unsent (queued or sending)
        mails.
        """
        now = self._clock()

        def run(db: sqlite3.Connection) -> int:
            n = db.execute("SELECT COUNT(*) FROM outbox WHERE service=? AND state IN "
                           "('queued','sending')", (service,)).fetchone()[0]
            if n >= limit:
                raise QueueFull(f"the send queue of EmailService {service} is full ({n} of "
                                f"{limit} mails waiting)",
                                hint="retry later, or raise send_queue_size")
            cur = db.execute(
                "INSERT INTO outbox (service, state, message_id, date, message, summary, "
                "created_at, updated_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (service, message_id, date, json.dumps(message), summary, now, now))
            return int(cur.lastrowid or 0)  # an INSERT always sets it

        return self._tx(run)

    def recover(self, service: str) -> int:
        """Mark mails left in ``sending`` by a stopped process as ``unknown``; returns how many."""
        return self._tx(lambda db: db.execute(
            "UPDATE outbox SET state='unknown', updated_at=?, reason=? WHERE service=? AND "
            "state='sending'",
            (self._clock(), "postline stopped while this mail was being sent; it may have been "
             "delivered, so it is not resent automatically (postline outbox retry --id sends "
             "it again)", service)).rowcount)

    def due(self, service: str, *, limit: int, exclude: set[int] | frozenset[int] = frozenset()
            ) -> list[OutboxEntry]:
        """Queued mails whose next attempt is due, oldest first (at most ``limit``)."""
        with self._store.read() as db:
            rows = db.execute(
                "SELECT * FROM outbox WHERE service=? AND state='queued' AND next_attempt_at<=? "
                "ORDER BY id LIMIT ?", (service, self._clock(), limit + len(exclude))).fetchall()
        return [e for e in map(_entry, rows) if e.id not in exclude][:limit]

    def next_due_at(self, service: str) -> float | None:
        """Wall-clock time of the earliest queued mail's next attempt, or None."""
        with self._store.read() as db:
            row = db.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE service=? AND "
                                   "state='queued'", (service,)).fetchone()
        return None if row[0] is None else float(row[0])

    def mark(self, entry_id: int, state: str, *, reason: str = "", result: dict[str, Any] | None = None,
             next_attempt_at: float | None = None, attempt: bool = False) -> None:
        """Move a mail to ``state`` (committed to disk before this returns)."""
        if state not in STATES:
            raise ValueError(f"outbox state {state!r} is not one of {', '.join(STATES)}")
        sets = ["state=?", "updated_at=?", "reason=?"]
        args: list[Any] = [state, self._clock(), reason]
        if result is not None:
            sets.append("result=?")
            args.append(json.dumps(result))
        if next_attempt_at is not None:
            sets.append("next_attempt_at=?")
            args.append(next_attempt_at)
        if attempt:
            sets.append("attempts=attempts+1")
        self._tx(lambda db: db.execute(f"UPDATE outbox SET {', '.join(sets)} WHERE id=?",
                                       (*args, entry_id)))

    def list(self, service: str, *, state: str | None = None, limit: int = 1000
             ) -> list[OutboxEntry]:
        """Mails of ``service`` (newest first), optionally only those in ``state``."""
        sql, args = "SELECT * FROM outbox WHERE service=?", [service]
        if state:
            sql += " AND state=?"
            args.append(state)
        with self._store.read() as db:
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> OutboxEntry | None:
        """The entry with id ``entry_id`` (any service, any state), or None."""
        with self._store.read() as db:
            row = db.execute("SELECT * FROM outbox WHERE id=?", (entry_id,)).fetchone()
        return _entry(row) if row else None

    def requeue(self, service: str, *, entry_id: int | None = None, all_failed: bool = False
                ) -> int:
        """Put failed mails (or one failed/unknown mail by id) back to ``queued``.

        Returns how many were requeued.
        """
        now = self._clock()
        if entry_id is not None:
            sql = ("UPDATE outbox SET state='queued', attempts=0, next_attempt_at=0, reason='', "
                   "updated_at=? WHERE service=? AND id=? AND state IN ('failed','unknown')")
            args: tuple[Any, ...] = (now, service, entry_id)
        elif all_failed:
            sql = ("UPDATE outbox SET state='queued', attempts=0, next_attempt_at=0, reason='', "
                   "updated_at=? WHERE service=? AND state='failed'")
            args = (now, service)
        else:
            raise ValueError("give entry_id or all_failed")
        return self._tx(lambda db: db.execute(sql, args).rowcount)

    def counts(self, service: str) -> dict[str, int]:
        """Number of mails of ``service`` per state."""
        with self._store.read() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM outbox WHERE service=? "
                                    "GROUP BY state", (service,)).fetchall()
        return {s.value: 0 for s in OutboxState} | dict(rows)


def _create(db: sqlite3.Connection, found: int) -> None:
    # statement by statement: executescript would COMMIT the migration's transaction
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _entry(row: sqlite3.Row) -> OutboxEntry:
    result = row["result"]
    return OutboxEntry(id=row["id"], service=row["service"], state=row["state"],
                       message_id=row["message_id"], date=row["date"],
                       message=json.loads(row["message"]), summary=row["summary"],
                       attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
                       created_at=row["created_at"], updated_at=row["updated_at"],
                       reason=row["reason"], result=json.loads(result) if result else None)
