"""The ledger: durable state of every mail a source has seen (the access coordinator).

States::

    acquired  being processed (attempts counts how often it was taken; a crash leaves it here)
    done      every sink has it                       -> then moved to the done folder
    failed    gave up (reason, attempts)              -> then moved to the error folder
    ignored   a filter said so, or a duplicate        -> then moved to the ignore folder

``settled`` says whether the server-side action that follows the state (move, delete or
nothing) has happened; a mail ``done`` but not ``settled`` is moved on the next round, not
processed again. Keys are ``connection/folder/UIDVALIDITY/UID`` (POP3: ``.../UIDL``).
``fingerprint`` is the content fingerprint (:mod:`postline.source.fingerprint`) that a
later mail with the same Message-ID must match to be its duplicate; entries written before
ledger version 2 have none and match any content (as they did then).

:class:`Ledger` is the interface; :class:`SqliteLedger` the default implementation (WAL,
``synchronous=FULL``: each call that changes state returns only after its commit is on
disk). A shared database (PostgreSQL) can implement the same interface later.
"""

from __future__ import annotations

import abc
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postline.errors import ConfigError
from postline.state.ledger_schema import COLS, LEDGER_VERSION, migrate
from postline.state.paths import ledger_path
from postline.state.sqlite import SqliteStore, chunks, marks, refuse_newer
from postline.state.states import LedgerState

__all__ = ["COLS", "LEDGER_VERSION", "STATES", "Entry", "Ledger", "LedgerState", "Outcome",
           "Place", "SqliteLedger", "done_by_message_id_sql", "ledger_path", "migrate"]


STATES = tuple(LedgerState)


@dataclass(frozen=True)
class Entry:
    source: str
    key: str
    state: str
    connection: str = ""
    folder: str = ""
    folder_version: str = ""
    server_id: str = ""
    reason: str | None = None
    attempts: int = 0
    message_id: str | None = None
    content_hash: str | None = None
    subject: str | None = None
    settled: bool = False
    dup_of: str | None = None
    created: float = 0.0
    updated: float = 0.0
    fingerprint: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What processing decided for one mail; written by :meth:`Ledger.finish`."""

    key: str
    state: str                      # done | failed | ignored
    reason: str | None = None
    message_id: str | None = None
    content_hash: str | None = None
    subject: str | None = None
    dup_of: str | None = None
    settled: bool = False
    fingerprint: str | None = None


@dataclass(frozen=True)
class Place:
    key: str
    connection: str
    folder: str
    folder_version: str
    server_id: str


class Ledger(abc.ABC):
    """Durable per-mail state. Every method that writes commits durably before returning."""

    @abc.abstractmethod
    def get_many(self, source: str, keys: Sequence[str]) -> dict[str, Entry]:
        """Entries of ``keys`` that exist."""

    def states(self, source: str, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """(state, settled) of those ``keys`` that have an entry: what a round needs of
        every mail it lists, without the rest of each entry (a full listing of a big folder
        would otherwise hold an Entry per mail)."""
        return {k: (e.state, e.settled) for k, e in self.get_many(source, keys).items()}

    @abc.abstractmethod
    def acquire(self, source: str, places: Sequence[Place]) -> dict[str, int]:
        """Mark ``places`` acquired (attempts + 1); returns key -> attempts so far."""

    @abc.abstractmethod
    def finish(self, source: str, outcomes: Sequence[Outcome]) -> None:
        """Write final states (not yet settled unless the outcome says so)."""

    def finish_and_acquire(self, source: str, outcomes: Sequence[Outcome],
                           places: Sequence[Place]) -> dict[str, int]:
        """:meth:`finish` these outcomes, then :meth:`acquire` the next batch; returns what
        acquire returns. Implementations may do both in one durable commit."""
        self.finish(source, outcomes)
        return self.acquire(source, places)

    @abc.abstractmethod
    def mark_settled(self, source: str, keys: Iterable[str]) -> None:
        """The server-side action of these keys has happened."""

    @abc.abstractmethod
    def find_done(self, source: str, identity: str, *, newest: bool = False) -> Entry | None:
        """The oldest (or the newest) ``done`` entry whose Message-ID (or content hash)
        equals ``identity``."""

    def find_done_many(self, source: str, identities: Iterable[str], *,
                       newest: bool = False) -> dict[str, Entry]:
        """:meth:`find_done` for many identities at once: identity -> the oldest (or the
        newest) done entry, for those that have one."""
        out: dict[str, Entry] = {}
        for identity in dict.fromkeys(identities):
            found = self.find_done(source, identity, newest=newest)
            if found is not None:
                out[identity] = found
        return out

    @abc.abstractmethod
    def done_entries(self, source: str, identities: Iterable[str]) -> dict[str, list[Entry]]:
        """Every ``done`` entry per identity (Message-ID or content hash), oldest first,
        for the identities that have one: the duplicate check compares their
        fingerprints."""

    @abc.abstractmethod
    def folder_version(self, source: str, folder: str) -> str | None:
        """The UIDVALIDITY last seen for ``folder``, or None."""

    @abc.abstractmethod
    def set_folder_version(self, source: str, folder: str, version: str) -> None:
        """Remember ``version`` for ``folder``."""

    @abc.abstractmethod
    def folder_state(self, source: str, folder: str) -> dict[str, str]:
        """The named values kept for ``folder`` of ``source`` (cursor, full_scan_at,
        rescan_at, ...; see ledger_schema.py); empty when none."""

    @abc.abstractmethod
    def set_folder_state(self, source: str, folder: str,
                         values: dict[str, str | None]) -> None:
        """Set (or with None remove) named values of ``folder``, in one commit."""

    @abc.abstractmethod
    def pending(self, source: str, folder: str) -> list[Entry]:
        """Entries of ``folder`` whose work is not finished: ``acquired`` ones and final ones
        not yet settled (their move is due). What a round that does not list the whole
        folder must look at besides the new mails."""

    @abc.abstractmethod
    def entries(self, source: str, *, state: str | None = None, limit: int | None = None,
                newest_first: bool = False) -> list[Entry]:
        """Entries of ``source`` (optionally in one state), oldest first (or the most
        recently updated first)."""

    @abc.abstractmethod
    def counts(self, source: str) -> dict[str, int]:
        """How many entries of ``source`` are in each state (every state, 0 included)."""

    @abc.abstractmethod
    def reset(self, source: str, keys: Sequence[str] | None = None, *,
              rescan: bool = True) -> int:
        """Forget ``keys`` (None: all of ``source``) and their duplicates; returns how many.
        With ``rescan`` the next round of the source lists its folders in full
        (``rescan_at``), so mails still there are read again (not needed for mails known
        to be gone)."""

    @abc.abstractmethod
    def prune(self, source: str, *, before: float, states: Sequence[str]) -> int:
        """Forget settled entries of ``source`` in ``states`` last updated before ``before``
        (Unix time); returns how many. Callers make sure those mails are no longer where
        the source reads them (see ``postline ledger prune``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the database."""


_COLS = COLS


def done_by_message_id_sql(n: int, columns: str = ",".join(_COLS)) -> str:
    """The query of :meth:`SqliteLedger.find_done_many` for ``n`` identities: done entries,
    oldest first (the first per identity is the oldest, the last the newest). ``+state`` keeps
    SQLite on the Message-ID index: by the state index it would scan every done entry of
    the source for each batch, a cost that grows with the ledger; ``+created`` keeps it from
    walking the whole source along mails_created to save the sort of a few rows."""
    return (f"SELECT {columns} FROM mails WHERE source=? AND +state='done' AND "
            f"message_id IN ({','.join('?' * n)}) ORDER BY +created, rowid")


class SqliteLedger(Ledger):
    """SQLite in WAL mode with ``synchronous=FULL``. Safe to share between threads."""

    def __init__(self, *, path: Path, clock: Callable[[], float] = time.time,
                 read_only: bool = False) -> None:
        """Open (and create) the ledger at ``path``; ``read_only`` opens an existing one
        for looking only (the web console), never creating or changing it."""
        self.path = Path(path)
        self._clock = clock
        if read_only:
            try:
                self._store = SqliteStore.open(path=self.path, what="the ledger",
                                               read_only=True)
                have = {r[1] for r in self._store.db.execute("PRAGMA table_info(mails)")}
            except sqlite3.Error as exc:
                raise ConfigError(f"ledger {self.path} cannot be read: {exc}") from exc
            if have and "fingerprint" not in have:   # version 1, not migrated yet
                self._select = ",".join(c if c in have else f"NULL AS {c}" for c in _COLS)
            return
        try:
            self._store = SqliteStore.open(path=self.path, what="the ledger")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"ledger {self.path} cannot be opened: {exc}",
                              hint="check the state directory's permissions and free space"
                              ) from exc
        try:
            found = migrate(self._store.db)
        except sqlite3.Error as exc:
            self._store.close()
            raise ConfigError(f"ledger {self.path} cannot be opened: {exc}",
                              hint="check the state directory's permissions and free space"
                              ) from exc
        if found > LEDGER_VERSION:
            self._store.close()
        refuse_newer(found=found, knows=LEDGER_VERSION, what="ledger", path=self.path)

    # the two connections, by the names the plan tests (tests/unit/source) look at
    @property
    def _db(self) -> sqlite3.Connection:
        return self._store.db

    @property
    def _rdb(self) -> sqlite3.Connection:
        return self._store.rdb

    def _tx(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        self._tx_many([(sql, rows)])

    def _tx_many(self, steps: list[tuple[str, Iterable[tuple[Any, ...]]]]) -> None:
        with self._write() as db:
            for sql, rows in steps:
                db.executemany(sql, rows)

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); a failed write raises
        StorageError naming the cause: nothing was recorded, and the runner stops the round
        (nothing settled) and tries again later, like a full sink disk."""
        return self._store.write()

    _select = ",".join(_COLS)   # what a query reads (a read-only v1 ledger: see __init__)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Entry]:
        with self._store.read() as db:
            rows = db.execute(sql, args).fetchall()
        return [Entry(**{**dict(r), "settled": bool(r["settled"])}) for r in rows]

    def get_many(self, source: str, keys: Sequence[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for chunk in chunks(list(keys)):
            for e in self._query(f"SELECT {self._select} FROM mails WHERE source=? "
                                 f"AND key IN ({marks(len(chunk))})", (source, *chunk)):
                out[e.key] = e
        return out

    def states(self, source: str, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
        out: dict[str, tuple[str, bool]] = {}
        with self._store.read() as db:
            for chunk in chunks(list(keys)):
                for key, state, settled in db.execute(
                        f"SELECT key, state, settled FROM mails WHERE source=? AND key IN "
                        f"({marks(len(chunk))})", (source, *chunk)):
                    out[key] = (state, bool(settled))
        return out

    _ACQUIRE = ("INSERT INTO mails (source, key, state, connection, folder, folder_version, "
                "server_id, attempts, created, updated) VALUES (?,?,'acquired',?,?,?,?,1,?,?) "
                "ON CONFLICT (source, key) DO UPDATE SET state='acquired', settled=0, "
                "attempts=attempts+1, updated=excluded.updated")
    _FINISH = ("INSERT INTO mails (source, key, state, reason, message_id, content_hash, "
               "subject, dup_of, settled, created, updated, fingerprint) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
               "ON CONFLICT (source, key) DO UPDATE SET state=excluded.state, "
               "reason=excluded.reason, message_id=excluded.message_id, "
               "content_hash=excluded.content_hash, subject=excluded.subject, "
               "dup_of=excluded.dup_of, settled=excluded.settled, updated=excluded.updated, "
               "fingerprint=excluded.fingerprint")

    def _acquire_rows(self, source: str, places: Sequence[Place], now: float) -> list[tuple[Any, ...]]:
        return [(source, p.key, p.connection, p.folder, p.folder_version, p.server_id, now, now)
                for p in places]

    def _finish_rows(self, source: str, outcomes: Sequence[Outcome], now: float
                     ) -> list[tuple[Any, ...]]:
        return [(source, o.key, o.state, o.reason, o.message_id, o.content_hash, o.subject,
                 o.dup_of, int(o.settled), now, now, o.fingerprint) for o in outcomes]

    def _attempts(self, source: str, places: Sequence[Place]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._store.read() as db:
            for chunk in chunks([p.key for p in places]):
                out.update(db.execute(
                    f"SELECT key, attempts FROM mails WHERE source=? AND key IN "
                    f"({marks(len(chunk))})", (source, *chunk)).fetchall())
        return out

    def acquire(self, source: str, places: Sequence[Place]) -> dict[str, int]:
        self._tx(self._ACQUIRE, self._acquire_rows(source, places, self._clock()))
        return self._attempts(source, places)

    def finish(self, source: str, outcomes: Sequence[Outcome]) -> None:
        self._tx(self._FINISH, self._finish_rows(source, outcomes, self._clock()))

    def finish_and_acquire(self, source: str, outcomes: Sequence[Outcome],
                           places: Sequence[Place]) -> dict[str, int]:
        """Both in one transaction: one fsync per batch instead of two."""
        now = self._clock()
        self._tx_many([(self._FINISH, self._finish_rows(source, outcomes, now)),
                       (self._ACQUIRE, self._acquire_rows(source, places, now))])
        return self._attempts(source, places)

    def mark_settled(self, source: str, keys: Iterable[str]) -> None:
        now = self._clock()
        self._tx("UPDATE mails SET settled=1, updated=? WHERE source=? AND key=?",
                 [(now, source, k) for k in keys])

    def find_done(self, source: str, identity: str, *, newest: bool = False) -> Entry | None:
        order = "+created DESC, rowid DESC" if newest else "+created, rowid"
        found = self._query(f"SELECT {self._select} FROM mails WHERE source=? AND "
                            f"message_id=? AND +state='done' ORDER BY {order} LIMIT 1",
                            (source, identity))
        return found[0] if found else None

    def find_done_many(self, source: str, identities: Iterable[str], *,
                       newest: bool = False) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for chunk in chunks(list(dict.fromkeys(identities))):
            for e in self._query(done_by_message_id_sql(len(chunk), self._select),
                                 (source, *chunk)):
                if newest:
                    out[e.message_id] = e  # type: ignore[index]
                else:
                    out.setdefault(e.message_id, e)  # type: ignore[arg-type]
        return out

    def done_entries(self, source: str, identities: Iterable[str]) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for chunk in chunks(list(dict.fromkeys(identities))):
            for e in self._query(done_by_message_id_sql(len(chunk), self._select),
                                 (source, *chunk)):
                out.setdefault(e.message_id, []).append(e)  # type: ignore[arg-type]
        return out

    def folder_version(self, source: str, folder: str) -> str | None:
        with self._store.read() as db:
            row = db.execute("SELECT version FROM folders WHERE source=? AND folder=?",
                                   (source, folder)).fetchone()
        return row[0] if row else None

    def set_folder_version(self, source: str, folder: str, version: str) -> None:
        self._tx("INSERT INTO folders VALUES (?,?,?) ON CONFLICT (source, folder) "
                 "DO UPDATE SET version=excluded.version", [(source, folder, version)])

    def folder_state(self, source: str, folder: str) -> dict[str, str]:
        with self._store.read() as db:
            rows = db.execute("SELECT name, value FROM folder_state WHERE source=? "
                                     "AND folder=?", (source, folder)).fetchall()
        return dict(rows)

    def set_folder_state(self, source: str, folder: str,
                         values: dict[str, str | None]) -> None:
        with self._write() as db:
            for name, value in values.items():
                if value is None:
                    db.execute("DELETE FROM folder_state WHERE source=? AND folder=? AND "
                               "name=?", (source, folder, name))
                else:
                    db.execute("INSERT INTO folder_state VALUES (?,?,?,?) ON CONFLICT "
                               "(source, folder, name) DO UPDATE SET value=excluded.value",
                               (source, folder, name, value))

    def pending(self, source: str, folder: str) -> list[Entry]:
        # "settled=0" as written: it is what lets SQLite use the partial index mails_pending
        return self._query(f"SELECT {self._select} FROM mails WHERE source=? AND folder=? "
                           "AND settled=0 ORDER BY rowid", (source, folder))

    def entries(self, source: str, *, state: str | None = None, limit: int | None = None,
                newest_first: bool = False) -> list[Entry]:
        sql = f"SELECT {self._select} FROM mails WHERE source=?"
        args: tuple[Any, ...] = (source,)
        if state:
            sql += " AND state=?"
            args += (state,)
        # rowid breaks ties (a batch shares one time): it is in every index, so the order
        # costs no sort, and it is the order the mails were first seen in
        sql += (" ORDER BY updated DESC, rowid DESC" if newest_first
                else " ORDER BY created, rowid")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, args)

    def counts(self, source: str) -> dict[str, int]:
        with self._store.read() as db:
            try:
                rows = db.execute("SELECT state, n FROM state_counts WHERE source=?",
                                  (source,)).fetchall()
            except sqlite3.OperationalError:   # an older ledger opened read-only: no counts
                rows = db.execute("SELECT state, COUNT(*) FROM mails WHERE source=? "
                                         "GROUP BY state", (source,)).fetchall()
        return {s.value: 0 for s in LedgerState} | dict(rows)

    def reset(self, source: str, keys: Sequence[str] | None = None, *,
              rescan: bool = True) -> int:
        now = repr(self._clock())
        with self._write() as db:
            # every folder the source read gets listed in full again: a reset mail still in
            # the input folder lies below the cursor. A time, not a flag: a round that began
            # before the reset and ends after it must not count as that full listing.
            folders = [r[0] for r in db.execute(
                "SELECT folder FROM folders WHERE source=? UNION SELECT folder FROM "
                "folder_state WHERE source=?", (source, source))]
            if keys is None:
                n = db.execute("DELETE FROM mails WHERE source=?", (source,)).rowcount
                db.execute("DELETE FROM folders WHERE source=?", (source,))
                db.execute("DELETE FROM folder_state WHERE source=?", (source,))
            else:
                n = 0
                for k in keys:  # two statements: each on its index (an OR took neither)
                    n += db.execute("DELETE FROM mails WHERE source=? AND key=?",
                                    (source, k)).rowcount
                    n += db.execute("DELETE FROM mails WHERE source=? AND dup_of=?",
                                    (source, k)).rowcount
            db.executemany("INSERT INTO folder_state VALUES (?,?,'rescan_at',?) ON CONFLICT "
                           "(source, folder, name) DO UPDATE SET value=excluded.value",
                           [(source, f, now) for f in folders if rescan])
        return n

    PRUNE_CHUNK = 5000      # rows per transaction at most
    PRUNE_TX_SECONDS = 0.05  # ... and about this long: a running runner's commits wait little

    def prune(self, source: str, *, before: float, states: Sequence[str]) -> int:
        states = [st for st in states if st in STATES and st != LedgerState.ACQUIRED]
        if not states:
            return 0
        marks = ",".join("?" * len(states))
        # Along mails_updated, oldest first, from where the last chunk ended: each chunk
        # reads about what it deletes, however many entries are younger or kept (+state
        # keeps SQLite from walking all entries of a state instead).
        sql = (f"SELECT rowid, updated FROM mails WHERE source=? AND updated>=? AND updated<? "
               f"AND settled=1 AND +state IN ({marks}) ORDER BY updated LIMIT ?")
        total, since = 0, -1.0   # times are never negative
        # A deleted entry costs a page of each index, from disk when the ledger is bigger
        # than the page cache (~0.25 ms each at ten million entries): the chunk grows or
        # shrinks so that each transaction takes about PRUNE_TX_SECONDS.
        chunk = min(50, self.PRUNE_CHUNK)
        while True:
            t = time.monotonic()
            with self._write() as db:
                rows = db.execute(sql, (source, since, before, *states, chunk)).fetchall()
                db.executemany("DELETE FROM mails WHERE rowid=?", [(r,) for r, _ in rows])
            total += len(rows)
            if len(rows) < chunk:
                return total
            since = rows[-1][1]
            took = time.monotonic() - t
            if took > self.PRUNE_TX_SECONDS:
                chunk = max(10, chunk // 2)
            elif took < self.PRUNE_TX_SECONDS / 3:
                chunk = min(self.PRUNE_CHUNK, chunk * 2)

    def close(self) -> None:
        self._store.close()
