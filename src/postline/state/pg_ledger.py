"""The ledger on PostgreSQL: :class:`postline.state.ledger.Ledger` in a StateStore's schema.

Same tables and meaning as the SQLite ledger (created by :mod:`postline.state.migrations`,
version 2); every method that writes runs in one transaction that has committed when it
returns (PostgreSQL's ``synchronous_commit`` is on by default: a commit is on the server's
disk). Many instances share it; what keeps two of them from working one source at once is
the lease (:mod:`postline.state.leases`): with a ``fence`` every write for a source first
checks, inside its transaction, that this instance still holds the source's lease with its
fencing token (``SELECT ... FOR SHARE`` on the lease row, so a take-over waits for the
commit and a stale owner's write is refused with :class:`Fenced`).

Failures of the database (lost connection, server restarting) become StorageError: the
runner stops the round, nothing settled, and tries again later, as with a full disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
from psycopg import sql

from postline.errors import ConfigError, PostlineError, StorageError
from postline.state.ledger import STATES, Entry, Ledger, Outcome, Place
from postline.state.ledger_schema import COLS


class Fenced(PostlineError):
    """This instance no longer owns the source (its lease expired or was taken): the write
    was refused, nothing changed. The runner of that source stops; the instance rejoins."""


class Fence(Protocol):
    """Who this instance is and which lease token it holds per source."""

    owner: str

    def token(self, source: str) -> int | None:
        """The fencing token held for ``source``, or None when not owned."""


_SELECT = ",".join(c for c in COLS)


def _entry(row: tuple) -> Entry:
    return Entry(**dict(zip(COLS, row, strict=False)))


class PostgresLedger(Ledger):
    """The ledger in schema ``schema`` of the database behind ``pool`` (a psycopg_pool
    ConnectionPool, owned by this ledger and closed by :meth:`close`)."""

    def __init__(self, *, pool: Any, schema: str, label: str, clock=time.time,
                 fence: Fence | None = None) -> None:
        self.pool = pool
        self.schema = schema
        self.label = label
        self.fence = fence
        self._clock = clock
        self._s = sql.Identifier(schema)
        self.path = None   # no file: the runner commits inline (see workflow/commit.py)
        # writes that join the next commit of a source's outcomes (the postgresql sink)
        self._attached: dict[str, list[Any]] = {}
        self._attach_lock = threading.Lock()

    def attach(self, source: str, write: Any) -> None:
        """Run ``write(conn)`` inside the next transaction that writes outcomes of
        ``source`` (both commit or neither). Dropped if that transaction fails: the batch's
        mails stay acquired and come again."""
        with self._attach_lock:
            self._attached.setdefault(source, []).append(write)

    def _run_attached(self, conn: psycopg.Connection, source: str) -> None:
        with self._attach_lock:
            writes = self._attached.pop(source, [])
        for write in writes:
            write(conn)

    # -- plumbing ------------------------------------------------------------------------
    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    @contextmanager
    def _conn(self, *, write: bool, source: str | None = None) -> Iterator[psycopg.Connection]:
        try:
            with self.pool.connection() as conn:
                if write:
                    with conn.transaction():
                        if source is not None:
                            self._check_fence(conn, source)
                        yield conn
                else:
                    yield conn
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StorageError(f"{self.label}: the ledger in PostgreSQL failed: {first}",
                               hint="postline tries again; see the server's log if it "
                                    "keeps happening") from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":   # psycopg_pool: server unreachable
                raise StorageError(f"{self.label}: no connection to PostgreSQL for the "
                                   f"ledger ({exc})", hint="postline tries again") from exc
            raise

    def _check_fence(self, conn: psycopg.Connection, source: str) -> None:
        if self.fence is None:
            return
        token = self.fence.token(source)
        row = None
        if token is not None:
            row = conn.execute(self._q(
                "SELECT 1 FROM {s}.leases WHERE source=%s AND owner=%s AND token=%s AND "
                "expires_at > clock_timestamp() FOR SHARE"),
                (source, self.fence.owner, token)).fetchone()
        if row is None:
            held = f" (token {token})" if token is not None else ""
            raise Fenced(f"source {source}: this instance ({self.fence.owner}) no longer "
                         f"holds its lease{held}; the write was refused",
                         hint="another instance owns it now; this one rejoins")

    def check_fence(self, source: str) -> None:
        """Raise :class:`Fenced` unless this instance still holds ``source``'s lease (the
        runner asks right before a server-side move). Without a fence: nothing."""
        if self.fence is not None:
            with self._conn(write=True, source=source):
                pass

    def _rows(self, text: str, args: Sequence[Any]) -> list[tuple]:
        with self._conn(write=False) as conn:
            return conn.execute(self._q(text), args).fetchall()

    # -- reads ---------------------------------------------------------------------------
    def get_many(self, source: str, keys: Sequence[str]) -> dict[str, Entry]:
        rows = self._rows(f"SELECT {_SELECT} FROM {{s}}.mails WHERE source=%s AND "
                          "key = ANY(%s)", (source, list(keys)))
        return {r[1]: _entry(r) for r in rows}

    def states(self, source: str, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
        rows = self._rows("SELECT key, state, settled FROM {s}.mails WHERE source=%s AND "
                          "key = ANY(%s)", (source, list(keys)))
        return {k: (st, bool(se)) for k, st, se in rows}

    def _done_rows(self, source: str, ids: list[str]) -> list[Entry]:
        rows = self._rows(f"SELECT {_SELECT} FROM {{s}}.mails WHERE source=%s AND "
                          "state='done' AND message_id = ANY(%s) ORDER BY created, seq",
                          (source, ids))
        return [_entry(r) for r in rows]

    def find_done(self, source: str, identity: str, *, newest: bool = False) -> Entry | None:
        found = self._done_rows(source, [identity])
        return (found[-1] if newest else found[0]) if found else None

    def find_done_many(self, source: str, identities: Iterable[str], *,
                       newest: bool = False) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for e in self._done_rows(source, list(dict.fromkeys(identities))):
            if newest:
                out[e.message_id] = e  # type: ignore[index]
            else:
                out.setdefault(e.message_id, e)  # type: ignore[arg-type]
        return out

    def done_entries(self, source: str, identities: Iterable[str]) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for e in self._done_rows(source, list(dict.fromkeys(identities))):
            out.setdefault(e.message_id, []).append(e)  # type: ignore[arg-type]
        return out

    def folder_version(self, source: str, folder: str) -> str | None:
        rows = self._rows("SELECT version FROM {s}.folders WHERE source=%s AND folder=%s",
                          (source, folder))
        return rows[0][0] if rows else None

    def folder_state(self, source: str, folder: str) -> dict[str, str]:
        return dict(self._rows("SELECT name, value FROM {s}.folder_state WHERE source=%s "
                               "AND folder=%s", (source, folder)))

    def pending(self, source: str, folder: str) -> list[Entry]:
        return [_entry(r) for r in self._rows(
            f"SELECT {_SELECT} FROM {{s}}.mails WHERE source=%s AND folder=%s AND NOT "
            "settled ORDER BY seq", (source, folder))]

    def entries(self, source: str, *, state: str | None = None, limit: int | None = None,
                newest_first: bool = False) -> list[Entry]:
        text = f"SELECT {_SELECT} FROM {{s}}.mails WHERE source=%s"
        args: list[Any] = [source]
        if state:
            text += " AND state=%s"
            args.append(state)
        text += (" ORDER BY updated DESC, seq DESC" if newest_first
                 else " ORDER BY created, seq")
        if limit:
            text += f" LIMIT {int(limit)}"
        return [_entry(r) for r in self._rows(text, args)]

    def counts(self, source: str) -> dict[str, int]:
        rows = self._rows("SELECT state, count(*) FROM {s}.mails WHERE source=%s GROUP BY "
                          "state", (source,))
        return {s: 0 for s in STATES} | {k: int(n) for k, n in rows}

    # -- writes --------------------------------------------------------------------------
    _ACQUIRE = ("INSERT INTO {s}.mails (source, key, state, connection, folder, "
                "folder_version, server_id, attempts, created, updated) "
                "VALUES (%s,%s,'acquired',%s,%s,%s,%s,1,%s,%s) "
                "ON CONFLICT (source, key) DO UPDATE SET state='acquired', settled=false, "
                "attempts=mails.attempts+1, updated=excluded.updated RETURNING key, attempts")
    _FINISH = ("INSERT INTO {s}.mails (source, key, state, reason, message_id, content_hash, "
               "subject, dup_of, settled, created, updated, fingerprint) "
               "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
               "ON CONFLICT (source, key) DO UPDATE SET state=excluded.state, "
               "reason=excluded.reason, message_id=excluded.message_id, "
               "content_hash=excluded.content_hash, subject=excluded.subject, "
               "dup_of=excluded.dup_of, settled=excluded.settled, updated=excluded.updated, "
               "fingerprint=excluded.fingerprint")

    def _acquire_in(self, conn: psycopg.Connection, source: str, places: Sequence[Place],
                    now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        with conn.cursor() as cur:
            cur.executemany(self._q(self._ACQUIRE), [
                (source, p.key, p.connection, p.folder, p.folder_version, p.server_id, now,
                 now) for p in places], returning=True)
            while True:
                row = cur.fetchone()
                if row is not None:
                    out[row[0]] = row[1]
                if not cur.nextset():
                    break
        return out

    def finish_in(self, conn: psycopg.Connection, source: str,
                  outcomes: Sequence[Outcome]) -> None:
        """Write ``outcomes`` inside the caller's transaction on ``conn`` (the PostgreSQL
        sink commits its rows and the ledger's done together)."""
        now = self._clock()
        self._run_attached(conn, source)
        with conn.cursor() as cur:
            cur.executemany(self._q(self._FINISH), [
                (source, o.key, o.state, o.reason, o.message_id, o.content_hash, o.subject,
                 o.dup_of, bool(o.settled), now, now, o.fingerprint) for o in outcomes])

    def acquire(self, source: str, places: Sequence[Place]) -> dict[str, int]:
        if not places:
            return {}
        with self._conn(write=True, source=source) as conn:
            return self._acquire_in(conn, source, places, self._clock())

    def finish(self, source: str, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        with self._conn(write=True, source=source) as conn:
            self.finish_in(conn, source, outcomes)

    def finish_and_acquire(self, source: str, outcomes: Sequence[Outcome],
                           places: Sequence[Place]) -> dict[str, int]:
        """Both in one transaction."""
        with self._conn(write=True, source=source) as conn:
            if outcomes:
                self.finish_in(conn, source, outcomes)
            return self._acquire_in(conn, source, places, self._clock()) if places else {}

    def mark_settled(self, source: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        with self._conn(write=True, source=source) as conn:
            conn.execute(self._q("UPDATE {s}.mails SET settled=true, updated=%s WHERE "
                                 "source=%s AND key = ANY(%s)"),
                         (self._clock(), source, keys))

    def set_folder_version(self, source: str, folder: str, version: str) -> None:
        with self._conn(write=True, source=source) as conn:
            conn.execute(self._q("INSERT INTO {s}.folders VALUES (%s,%s,%s) ON CONFLICT "
                                 "(source, folder) DO UPDATE SET version=excluded.version"),
                         (source, folder, version))

    def set_folder_state(self, source: str, folder: str,
                         values: dict[str, str | None]) -> None:
        with self._conn(write=True, source=source) as conn:
            for name, value in values.items():
                if value is None:
                    conn.execute(self._q("DELETE FROM {s}.folder_state WHERE source=%s AND "
                                         "folder=%s AND name=%s"), (source, folder, name))
                else:
                    conn.execute(self._q(
                        "INSERT INTO {s}.folder_state VALUES (%s,%s,%s,%s) ON CONFLICT "
                        "(source, folder, name) DO UPDATE SET value=excluded.value"),
                        (source, folder, name, value))

    def reset(self, source: str, keys: Sequence[str] | None = None, *,
              rescan: bool = True) -> int:
        now = repr(self._clock())
        with self._conn(write=True, source=source) as conn:
            folders = [r[0] for r in conn.execute(self._q(
                "SELECT folder FROM {s}.folders WHERE source=%s UNION SELECT folder FROM "
                "{s}.folder_state WHERE source=%s"), (source, source))]
            if keys is None:
                n = conn.execute(self._q("DELETE FROM {s}.mails WHERE source=%s"),
                                 (source,)).rowcount
                conn.execute(self._q("DELETE FROM {s}.folders WHERE source=%s"), (source,))
                conn.execute(self._q("DELETE FROM {s}.folder_state WHERE source=%s"),
                             (source,))
            else:
                keys = list(keys)
                n = conn.execute(self._q("DELETE FROM {s}.mails WHERE source=%s AND "
                                         "(key = ANY(%s) OR dup_of = ANY(%s))"),
                                 (source, keys, keys)).rowcount
            if rescan:
                with conn.cursor() as cur:
                    cur.executemany(self._q(
                        "INSERT INTO {s}.folder_state VALUES (%s,%s,'rescan_at',%s) ON "
                        "CONFLICT (source, folder, name) DO UPDATE SET value=excluded.value"),
                        [(source, f, now) for f in folders])
        return n

    PRUNE_CHUNK = 5000   # rows per transaction: a running runner's commits wait little

    def prune(self, source: str, *, before: float, states: Sequence[str]) -> int:
        states = [st for st in states if st in STATES and st != "acquired"]
        total = 0
        while states:
            with self._conn(write=True) as conn:
                n = conn.execute(self._q(
                    "DELETE FROM {s}.mails WHERE (source, key) IN (SELECT source, key FROM "
                    "{s}.mails WHERE source=%s AND updated < %s AND settled AND "
                    "state = ANY(%s) ORDER BY updated LIMIT %s)"),
                    (source, before, states, self.PRUNE_CHUNK)).rowcount
            total += n
            if n < self.PRUNE_CHUNK:
                break
        return total

    def close(self) -> None:
        self.pool.close()


def open_pg_ledger(project: Any, *, read_only: bool = False, fence: Fence | None = None,
                   clock=time.time, max_size: int = 8) -> PostgresLedger:
    """The ledger of ``project``'s postgresql StateStore. Brings its schema up to date
    first (unless ``read_only``: then a schema that is missing or behind is a ConfigError
    saying to run ``postline state migrate``). Raises ConnectError, AuthError or ConfigError
    with one line naming the StateStore."""
    from postline.state.postgres import open_pool, target_of

    target = target_of(project)
    ensure_schema(target, read_only=read_only)
    pool = open_pool(target, max_size=max_size, name="postline-ledger", autocommit=True)
    return PostgresLedger(pool=pool, schema=target.schema, label=target.label, fence=fence,
                          clock=clock)


def ensure_schema(target: Any, *, read_only: bool = False) -> None:
    """Migrate ``target``'s schema to this postline's version (or, ``read_only``, check that
    it is current). Raises ConfigError (newer schema, missing privileges, not migrated)."""
    from postline.state.migrations import (
        MIGRATIONS,
        SchemaState,
        migrate,
        refuse_newer,
        schema_state,
    )
    from postline.state.postgres import connect, query_failure

    with connect(target, autocommit=True) as conn:
        try:
            if read_only:
                status = schema_state(conn, MIGRATIONS, schema=target.schema)
                refuse_newer(status, label=target.label, where=target.where)
                if status.state != SchemaState.CURRENT:
                    raise ConfigError(f"{target.label}: schema {target.schema} in "
                                      f"{target.where} is {status.state} (version "
                                      f"{status.version} of {status.latest})",
                                      hint="run: postline state migrate PROJECT")
            else:
                migrate(conn, MIGRATIONS, schema=target.schema, label=target.label,
                        where=target.where)
        except psycopg.Error as exc:
            raise query_failure(target, exc) from exc
