"""The outbox on PostgreSQL: SendAndForget mails shared by every instance of a fleet.

Same interface and states as :class:`postline.state.outbox.Outbox` (queued, sending,
sent, failed, unknown); what differs is who delivers. Any number of processes deliver a
service's mails at once, each row by exactly one of them:

- :meth:`PostgresOutbox.due` *claims* the rows it returns (``claimed_by`` = this process,
  ``claimed_until``) with ``FOR UPDATE SKIP LOCKED``: two deliverers never get one row.
  A background thread renews this process's claims every few seconds, so a claim lapses
  only when the process died or froze.
- ``mark(id, "sending")`` succeeds only while the claim is this process's; otherwise it
  raises :class:`LostClaim` before anything is sent, and every later ``mark`` of that row
  by this process changes nothing (the row belongs to whoever claimed it since).
- A row left in ``sending`` by a process whose claim lapsed becomes ``unknown`` (it may
  have been delivered: never resent automatically), as after a crash with SQLite.

:class:`FleetWindow` is the service's ``throttle`` for the whole fleet: a sliding window
kept in ``outbox_sends``, taken under a transaction-scoped advisory lock per service.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from postline.errors import QueueFull, StorageError
from postline.state.outbox import STATES, OutboxEntry

CLAIM_SECONDS = 60.0      # a claim outlives a renewal gap of this long
RENEW_SECONDS = 5.0
_COLS = ("id, service, state, message_id, date, message, summary, attempts, "
         "next_attempt_at, created_at, updated_at, reason, result")
_UNKNOWN = ("the process sending this mail stopped (its claim lapsed); it may have been "
            "delivered, so it is not resent automatically (postline outbox retry --id sends "
            "it again)")


class LostClaim(StorageError):
    """Another process claimed this row meanwhile: this one must not send it."""


def _entry(row: tuple) -> OutboxEntry:
    (id_, service, state, message_id, date, message, summary, attempts, next_at, created,
     updated, reason, result) = row
    return OutboxEntry(id=id_, service=service, state=state, message_id=message_id, date=date,
                       message=json.loads(message), summary=summary, attempts=attempts,
                       next_attempt_at=next_at, created_at=created, updated_at=updated,
                       reason=reason, result=json.loads(result) if result else None)


class PostgresOutbox:
    """The outbox in ``schema`` of the database behind ``pool`` (owned; closed by
    :meth:`close`). Every method commits before it returns; database failures raise
    StorageError."""

    def __init__(self, *, pool: Any, schema: str, clock: Callable[[], float] = time.time,
                 me: str | None = None, renew: bool = True) -> None:
        self.pool = pool
        self.me = me or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._clock = clock
        self._s = sql.Identifier(schema)
        self.path = f"PostgreSQL schema {schema}"
        self._stop = threading.Event()
        self._renewer = None
        if renew:
            self._renewer = threading.Thread(target=self._renew_loop, daemon=True,
                                             name="outbox-claims")
            self._renewer.start()

    def _run(self, text: str, args: Any = (), *, fetch: bool = True) -> Any:
        try:
            with self.pool.connection() as conn:
                cur = conn.execute(sql.SQL(text).format(s=self._s), args)
                return cur.fetchall() if fetch and cur.description else cur.rowcount
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StorageError(f"the outbox in PostgreSQL failed: {first}",
                               hint="nothing was changed; postline tries again") from exc

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self._run("UPDATE {s}.outbox SET claimed_until = now() + make_interval("
                          "secs => %s) WHERE claimed_by=%s AND state IN ('queued','sending')",
                          (CLAIM_SECONDS, self.me), fetch=False)
            except StorageError:
                pass   # the next round tries again; a lapsed claim is refused at mark()

    def close(self) -> None:
        self._stop.set()
        self.pool.close()

    def enqueue(self, *, service: str, message: dict, message_id: str, date: str,
                summary: str, limit: int) -> int:
        """Store a queued mail; returns its id. Raises QueueFull past ``limit`` unsent."""
        now = self._clock()
        try:
            with self.pool.connection() as conn, conn.transaction():
                # one enqueuer per service at a time, so the limit holds for the fleet
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"postline-outbox:{service}",))
                n = conn.execute(sql.SQL("SELECT count(*) FROM {}.outbox WHERE service=%s "
                                         "AND state IN ('queued','sending')").format(self._s),
                                 (service,)).fetchone()[0]
                if n >= limit:
                    raise QueueFull(f"the send queue of EmailService {service} is full ({n} "
                                    f"of {limit} mails waiting)",
                                    hint="retry later, or raise send_queue_size")
                return int(conn.execute(sql.SQL(
                    "INSERT INTO {}.outbox (service, state, message_id, date, message, "
                    "summary, created_at, updated_at) VALUES (%s,'queued',%s,%s,%s,%s,%s,%s) "
                    "RETURNING id").format(self._s),
                    (service, message_id, date, json.dumps(message), summary, now, now)
                ).fetchone()[0])
        except psycopg.Error as exc:
            raise StorageError(f"the outbox in PostgreSQL failed: {exc}; nothing was queued"
                               ) from exc

    def recover(self, service: str) -> int:
        """Rows left in ``sending`` by a process whose claim lapsed become ``unknown``;
        returns how many."""
        return self._run("UPDATE {s}.outbox SET state='unknown', updated_at=%s, reason=%s, "
                         "claimed_by=NULL WHERE service=%s AND state='sending' AND "
                         "(claimed_until IS NULL OR claimed_until < now())",
                         (self._clock(), _UNKNOWN, service), fetch=False)

    def due(self, service: str, *, limit: int, exclude: set[int] = frozenset()
            ) -> list[OutboxEntry]:
        """Claim and return queued mails whose next attempt is due, oldest first."""
        self.recover(service)
        rows = self._run(
            f"UPDATE {{s}}.outbox SET claimed_by=%s, claimed_until=now() + make_interval("
            f"secs => %s) WHERE id IN (SELECT id FROM {{s}}.outbox WHERE service=%s AND "
            f"state='queued' AND next_attempt_at <= %s AND NOT (id = ANY(%s)) AND "
            f"(claimed_by IS NULL OR claimed_by=%s OR claimed_until < now()) ORDER BY id "
            f"LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {_COLS}",
            (self.me, CLAIM_SECONDS, service, self._clock(), list(exclude), self.me, limit))
        return sorted(map(_entry, rows), key=lambda e: e.id)

    def next_due_at(self, service: str) -> float | None:
        rows = self._run("SELECT min(next_attempt_at) FROM {s}.outbox WHERE service=%s AND "
                         "state='queued'", (service,))
        return rows[0][0]

    def mark(self, entry_id: int, state: str, *, reason: str = "", result: dict | None = None,
             next_attempt_at: float | None = None, attempt: bool = False) -> None:
        """Move a mail of this process's claim to ``state``. Raises LostClaim when moving
        to ``sending`` a row claimed by another process since (nothing is sent then)."""
        if state not in STATES:
            raise ValueError(f"outbox state {state!r} is not one of {', '.join(STATES)}")
        sets = ["state=%s", "updated_at=%s", "reason=%s"]
        args: list = [state, self._clock(), reason]
        if result is not None:
            sets.append("result=%s")
            args.append(json.dumps(result))
        if next_attempt_at is not None:
            sets.append("next_attempt_at=%s")
            args.append(next_attempt_at)
        if attempt:
            sets.append("attempts=attempts+1")
        if state != "sending":
            sets.append("claimed_by=NULL")   # back in the pool, or final
        n = self._run(f"UPDATE {{s}}.outbox SET {', '.join(sets)} WHERE id=%s AND "
                      f"(claimed_by=%s OR claimed_by IS NULL)", (*args, entry_id, self.me),
                      fetch=False)
        if state == "sending" and n == 0:
            raise LostClaim(f"outbox mail {entry_id} was claimed by another instance while "
                            "this one waited; not sent here")

    def list(self, service: str, *, state: str | None = None, limit: int = 1000
             ) -> list[OutboxEntry]:
        text, args = f"SELECT {_COLS} FROM {{s}}.outbox WHERE service=%s", [service]
        if state:
            text += " AND state=%s"
            args.append(state)
        return [_entry(r) for r in self._run(text + " ORDER BY id DESC LIMIT %s",
                                             (*args, limit))]

    def get(self, entry_id: int) -> OutboxEntry | None:
        rows = self._run(f"SELECT {_COLS} FROM {{s}}.outbox WHERE id=%s", (entry_id,))
        return _entry(rows[0]) if rows else None

    def requeue(self, service: str, *, entry_id: int | None = None, all_failed: bool = False
                ) -> int:
        base = ("UPDATE {s}.outbox SET state='queued', attempts=0, next_attempt_at=0, "
                "reason='', claimed_by=NULL, updated_at=%s WHERE service=%s AND ")
        if entry_id is not None:
            return self._run(base + "id=%s AND state IN ('failed','unknown')",
                             (self._clock(), service, entry_id), fetch=False)
        if all_failed:
            return self._run(base + "state='failed'", (self._clock(), service), fetch=False)
        raise ValueError("give entry_id or all_failed")

    def counts(self, service: str) -> dict[str, int]:
        rows = self._run("SELECT state, count(*) FROM {s}.outbox WHERE service=%s GROUP BY "
                         "state", (service,))
        return {s: 0 for s in STATES} | {k: int(n) for k, n in rows}


class FleetLock:
    """The delivery "lock" of a fleet's outbox: every process may deliver (rows are
    claimed one by one), so it is always granted."""

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def holder(self) -> None:
        return None


class FleetWindow:
    """At most ``limit`` sends of ``service`` in any ``window`` seconds across the fleet
    (``limit`` None: no limit). Times come from ``clock`` (injectable for tests)."""

    def __init__(self, *, pool: Any, schema: str, service: str, limit: int | None,
                 window: float, clock: Callable[[], float] = time.time) -> None:
        self.pool, self.service = pool, service
        self.limit, self.window = limit, window
        self.limited = limit is not None
        self._clock = clock
        self._s = sql.Identifier(schema)

    def try_take(self) -> float:
        """Book a send now if the window allows (returns 0), else return the seconds until
        a slot frees (nothing booked). Raises StorageError."""
        if self.limit is None:
            return 0.0
        now = self._clock()
        try:
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"postline-throttle:{self.service}",))
                conn.execute(sql.SQL("DELETE FROM {}.outbox_sends WHERE service=%s AND "
                                     "at <= %s").format(self._s),
                             (self.service, now - self.window))
                starts = [r[0] for r in conn.execute(sql.SQL(
                    "SELECT at FROM {}.outbox_sends WHERE service=%s ORDER BY at").format(
                    self._s), (self.service,))]
                if len(starts) < self.limit:
                    conn.execute(sql.SQL("INSERT INTO {}.outbox_sends VALUES (%s, %s)").format(
                        self._s), (self.service, now))
                    return 0.0
                return max(starts[len(starts) - self.limit] + self.window - now, 0.001)
        except psycopg.Error as exc:
            raise StorageError(f"the fleet throttle in PostgreSQL failed: {exc}") from exc

    async def acquire(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        """Wait until a send is allowed, and book it."""
        while True:
            try:
                delay = await asyncio.to_thread(self.try_take)
            except StorageError:
                delay = 1.0      # the database is away: no send until it answers
            if delay <= 0:
                return
            await sleep(delay)
