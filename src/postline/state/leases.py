"""Source leases with fencing tokens, and the fleet's member list, on PostgreSQL.

A lease says which instance owns a source until when, by the database's clock (never the
instances' own clocks, which drift and freeze)::

    leases (source PK, owner, token bigint, expires_at, acquired_at, last_round_at)
    instances (name PK, host, pid, version, assets_hash, started_at, heartbeat_at)

- :meth:`Leases.acquire` takes a source nobody holds (or whose lease expired); the token
  grows by one with every new owner (a number the ledger's writes carry, see
  :mod:`postline.state.pg_ledger`: a write with an older token is refused).
- :meth:`Leases.renew` extends a lease this instance still holds with that token; it fails
  once the lease expired, even if nobody took it meanwhile: an instance frozen past its
  lease (SIGSTOP, a GC pause, a suspended VM) stops that source's runner and takes it again
  as a new owner, with a new token.
- :meth:`Leases.release` gives a source back at once (SIGTERM, rebalancing).

An instance counts as live while its heartbeat is younger than the lease.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from postline.errors import StorageError


@dataclass(frozen=True, kw_only=True)
class Member:
    """One row of ``instances``; ``live`` by the database clock."""

    name: str
    host: str
    pid: int
    version: str
    assets_hash: str
    started_at: datetime
    heartbeat_at: datetime
    live: bool


@dataclass(frozen=True, kw_only=True)
class LeaseRow:
    """One row of ``leases``; ``held`` when unexpired and owned."""

    source: str
    owner: str | None
    token: int
    expires_at: datetime
    last_round_at: datetime | None
    held: bool


class Holdings:
    """The tokens this instance holds, per source: the ledger's fence (thread-safe)."""

    def __init__(self, *, owner: str) -> None:
        self.owner = owner
        self._tokens: dict[str, int] = {}
        self._lock = threading.Lock()

    def token(self, source: str) -> int | None:
        with self._lock:
            return self._tokens.get(source)

    def set(self, source: str, token: int | None) -> None:
        with self._lock:
            if token is None:
                self._tokens.pop(source, None)
            else:
                self._tokens[source] = token

    def sources(self) -> dict[str, int]:
        with self._lock:
            return dict(self._tokens)


class Leases:
    """The lease table of one schema, as instance ``owner`` sees it. Every method is one
    short transaction on a connection of ``pool``; database failures become StorageError
    (the caller stops its runners after a lease's worth of them)."""

    def __init__(self, *, pool: Any, schema: str, owner: str, lease_seconds: float) -> None:
        self.pool = pool
        self.owner = owner
        self.lease = float(lease_seconds)
        self._joined: dict[str, Any] | None = None
        self._s = sql.Identifier(schema)

    def _run(self, text: str, args: tuple = ()) -> list[tuple]:
        try:
            with self.pool.connection() as conn:
                cur = conn.execute(sql.SQL(text).format(s=self._s), args)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StorageError(f"leases: PostgreSQL failed: {first}") from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise StorageError(f"leases: no connection to PostgreSQL ({exc})") from exc
            raise

    # -- members -------------------------------------------------------------------------
    def join(self, *, host: str, pid: int, version: str, assets_hash: str) -> None:
        """Register (or refresh) this instance."""
        self._joined = {"host": host, "pid": pid, "version": version,
                        "assets_hash": assets_hash}
        self._run("INSERT INTO {s}.instances (name, host, pid, version, assets_hash) VALUES "
                  "(%s,%s,%s,%s,%s) ON CONFLICT (name) DO UPDATE SET host=excluded.host, "
                  "pid=excluded.pid, version=excluded.version, assets_hash="
                  "excluded.assets_hash, started_at=now(), heartbeat_at=now()",
                  (self.owner, host, pid, version, assets_hash))

    def beat(self) -> int:
        """Record this instance's heartbeat; returns how many instances are live (this
        one included)."""
        # an instance gone for an hour leaves the list (cluster status shows it as gone
        # until then)
        rows = self._run(
            "WITH b AS (UPDATE {s}.instances SET heartbeat_at=now() WHERE name=%s "
            "RETURNING 1), gone AS (DELETE FROM {s}.instances WHERE heartbeat_at < now() - "
            "interval '1 hour') SELECT (SELECT count(*) FROM {s}.instances WHERE name <> %s "
            "AND heartbeat_at > now() - make_interval(secs => %s)) + 1, "
            "(SELECT count(*) FROM b)", (self.owner, self.owner, self.lease))
        if not rows[0][1] and self._joined is not None:
            self.join(**self._joined)   # removed while frozen for an hour: join again
        return int(rows[0][0])

    def leave(self) -> None:
        """Remove this instance from the member list."""
        self._run("DELETE FROM {s}.instances WHERE name=%s", (self.owner,))

    def members(self) -> list[Member]:
        """Every registered instance, live or not, by name."""
        rows = self._run("SELECT name, host, pid, version, assets_hash, started_at, "
                         "heartbeat_at, heartbeat_at > now() - make_interval(secs => %s) "
                         "FROM {s}.instances ORDER BY name", (self.lease,))
        return [Member(name=r[0], host=r[1], pid=r[2], version=r[3], assets_hash=r[4],
                       started_at=r[5], heartbeat_at=r[6], live=r[7]) for r in rows]

    # -- leases --------------------------------------------------------------------------
    def acquire(self, source: str) -> int | None:
        """Take ``source`` when free or expired; returns the new token, or None when another
        instance holds it."""
        rows = self._run(
            "INSERT INTO {s}.leases AS l (source, owner, token, expires_at) VALUES "
            "(%s, %s, 1, now() + make_interval(secs => %s)) ON CONFLICT (source) DO UPDATE "
            "SET owner=excluded.owner, token=l.token + 1, expires_at=excluded.expires_at, "
            "acquired_at=now() WHERE l.owner IS NULL OR l.expires_at <= now() "
            "RETURNING token", (source, self.owner, self.lease))
        return int(rows[0][0]) if rows else None

    def renew(self, source: str, token: int) -> bool:
        """Extend the lease held with ``token``; False when it expired or was taken."""
        return bool(self._run(
            "UPDATE {s}.leases SET expires_at = now() + make_interval(secs => %s) WHERE "
            "source=%s AND owner=%s AND token=%s AND expires_at > now() RETURNING 1",
            (self.lease, source, self.owner, token)))

    def release(self, source: str, token: int) -> None:
        """Give ``source`` back now (only if still held with ``token``)."""
        self._run("UPDATE {s}.leases SET owner=NULL, expires_at=now() WHERE source=%s AND "
                  "owner=%s AND token=%s", (source, self.owner, token))

    def round_done(self, source: str, token: int) -> None:
        """Note when ``source`` last finished a round (``cluster status``)."""
        self._run("UPDATE {s}.leases SET last_round_at=now() WHERE source=%s AND owner=%s "
                  "AND token=%s", (source, self.owner, token))

    def rows(self) -> list[LeaseRow]:
        """Every lease, by source."""
        rows = self._run("SELECT source, owner, token, expires_at, last_round_at, "
                         "owner IS NOT NULL AND expires_at > now() FROM {s}.leases "
                         "ORDER BY source")
        return [LeaseRow(source=r[0], owner=r[1], token=r[2], expires_at=r[3],
                         last_round_at=r[4], held=r[5]) for r in rows]
