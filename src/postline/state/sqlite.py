"""The one SQLite store helper of postline's state files (the ledger and the outbox).

Everything the two files have in common is here once, so they cannot disagree:

- where the files live: :mod:`postline.state.paths` names them;
- :meth:`SqliteStore.open`: read-write (file 0600 in a 0700 directory, WAL,
  ``synchronous=FULL``: a commit is on disk when it returns) or read-only (``mode=ro``:
  the console looks, never creates or changes);
- :meth:`SqliteStore.write`: one ``BEGIN IMMEDIATE ... COMMIT`` that never masks the
  cause. SQLite rolls a transaction back by itself on a full disk or an I/O error; a
  ROLLBACK issued then fails with "cannot rollback - no transaction is active" and, raised
  from the ``except`` block, would hide the real error. So ROLLBACK runs only while a
  transaction is still open, and the user reads the real cause as a :class:`StorageError`;
- rows by name (:class:`sqlite3.Row` on the reading connection);
- :func:`chunks` (:mod:`postline.chunks` at the size of an IN list): lists cut for
  ``IN (?, ...)`` queries (SQLite allows at most 999 parameters in older builds);
- :func:`migrate`: one schema-version scheme, a ``meta`` table row ``version`` written in
  the transaction that brings the file up to date; :func:`refuse_newer` for files written
  by a newer postline.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from postline.chunks import chunks as cut
from postline.errors import ConfigError, StorageError
from postline.files import private_sqlite

T = TypeVar("T")

# Parameters per IN (...) list: below SQLite's old limit of 999 with room for the others.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """:func:`postline.chunks.chunks` with the size of an ``IN (...)`` list."""
    return cut(items, size)


def marks(n: int) -> str:
    """``?,?,...`` with ``n`` placeholders, for ``IN (...)``."""
    return ",".join("?" * n)


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                               isolation_level=None, check_same_thread=False)
    return sqlite3.connect(str(path), timeout=30, isolation_level=None,
                           check_same_thread=False)


class SqliteStore:
    """One SQLite state file: a writing connection, and a reading one that sees the last
    commit without waiting for a writer's transaction (WAL). Safe to share between threads.

    ``db`` writes (tuples); ``rdb`` reads (rows by name); read-only: both are one
    ``mode=ro`` connection.
    """

    def __init__(self, *, path: Path, what: str, db: sqlite3.Connection,
                 rdb: sqlite3.Connection, write_hint: str = "") -> None:
        self.path = Path(path)
        self.what = what
        self.db = db
        self.rdb = rdb
        self.lock = threading.Lock()
        self.rlock = threading.Lock() if rdb is not db else self.lock
        self._write_hint = write_hint

    @classmethod
    def open(cls, *, path: Path, what: str, read_only: bool = False,
             separate_reader: bool = True, write_hint: str = "") -> SqliteStore:
        """Open ``path`` (``what`` names it in errors, e.g. "the outbox"). Read-write creates
        it 0600 (and its directory 0700) and sets WAL and ``synchronous=FULL``;
        ``separate_reader`` adds a query-only connection for reads. ``write_hint`` ends
        the message of a failed write. Raises sqlite3.Error or OSError (callers word them:
        the ledger and the outbox say different things about what was kept)."""
        path = Path(path)
        if read_only:
            db = _connect(path, read_only=True)
            db.row_factory = sqlite3.Row
            return cls(path=path, what=what, db=db, rdb=db, write_hint=write_hint)
        private_sqlite(path)   # 0600 (and its -wal/-shm), in a 0700 directory
        db = _connect(path, read_only=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if separate_reader:
                rdb = _connect(path, read_only=False)
                rdb.execute("PRAGMA query_only=ON")
                rdb.row_factory = sqlite3.Row
            else:
                db.row_factory = sqlite3.Row
                rdb = db
        except BaseException:
            db.close()   # nobody else holds it: the open failed
            raise
        return cls(path=path, what=what, db=db, rdb=rdb, write_hint=write_hint)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT) on the writing connection;
        yields it. Raises StorageError (from the sqlite3 error) when SQLite cannot write
        (disk full, I/O error, read-only file): nothing of the transaction was kept.
        Other exceptions of the body roll back and propagate unchanged."""
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                    self.db.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back (disk full, I/O error); a ROLLBACK
                    # then fails and would hide the real error
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                hint = f" {self._write_hint}" if self._write_hint else ""
                raise StorageError(f"cannot write {self.what} {self.path}: {exc} (is the disk "
                                   f"full or read-only?{hint})") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The reading connection (rows by name), held for the ``with`` block."""
        with self.rlock:
            yield self.rdb

    def close(self) -> None:
        """Close both connections (errors on close are of no use to anyone)."""
        with self.lock:
            for db in {id(self.db): self.db, id(self.rdb): self.rdb}.values():
                with contextlib.suppress(sqlite3.Error):
                    db.close()


def migrate(db: sqlite3.Connection, *, version: int,
            upgrade: Callable[[sqlite3.Connection, int], None]) -> int:
    """Bring a state file to ``version`` in one transaction: ``upgrade(db, found)`` runs
    when the file's version ``found`` is older (0 for a new file), then the ``meta`` row
    ``version`` says ``version``. A file that predates the meta table counts as the
    version in ``PRAGMA user_version`` (how the first outbox kept it). Returns the version
    the file had; a newer one is returned untouched for the caller to refuse
    (:func:`refuse_newer`). Raises sqlite3.Error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, "
                   "value TEXT NOT NULL)")
        found = stored_version(db)
        if found < version:
            upgrade(db, found)
            db.execute("INSERT INTO meta VALUES ('version', ?) ON CONFLICT (name) "
                       "DO UPDATE SET value=excluded.value", (str(version),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return found


def stored_version(db: sqlite3.Connection) -> int:
    """The version a state file says it has: its ``meta`` row ``version``, else (a file
    from before the meta table) ``PRAGMA user_version``; 0 for a new file. Raises
    sqlite3.Error."""
    try:
        row = db.execute("SELECT value FROM meta WHERE name='version'").fetchone()
    except sqlite3.OperationalError:   # no meta table (read-only: not created here)
        row = None
    return int(row[0]) if row else int(db.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(*, found: int, knows: int, what: str, path: Path) -> None:
    """Raise ConfigError when ``found`` (the file's version) is newer than ``knows``:
    never write into a file whose meaning this postline does not know."""
    if found > knows:
        raise ConfigError(f"{what} {path} was written by a newer postline ({what} "
                          f"version {found}, this one knows {knows})",
                          hint="upgrade postline on this host")
