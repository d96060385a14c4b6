"""Device-flow token caches on PostgreSQL: every instance of a fleet uses the one login.

The cache is sealed with the project's key exactly as in a file (``project.seal``), and
stored in the ``tokens`` table under the file's name (``<connection>-<direction>.bin``), so
the database never holds a readable refresh token. :meth:`SharedTokens.refresh_lock` is a
session advisory lock per cache: one instance at a time reloads the cache, refreshes the
access token and saves the (possibly rotated) refresh token; the others wait and then find
the fresh one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from postline.errors import TokenError


class SharedTokens:
    """The sealed token caches in a StateStore's schema."""

    def __init__(self, project: Any) -> None:
        from postline.state.postgres import target_of

        self.project = project
        self.target = target_of(project)
        self._s = sql.Identifier(self.target.schema)
        self._ready = False

    def _conn(self) -> psycopg.Connection:
        from postline.state.pg_ledger import ensure_schema
        from postline.state.postgres import connect

        if not self._ready:
            ensure_schema(self.target)
            self._ready = True
        return connect(self.target, autocommit=True)

    def load(self, name: str) -> str | None:
        """The MSAL cache JSON stored as ``name``, or None. Raises TokenError when it cannot
        be opened with the project's key, ConnectError when the database is away."""
        with self._conn() as conn:
            row = conn.execute(sql.SQL("SELECT sealed FROM {}.tokens WHERE name=%s").format(
                self._s), (name,)).fetchone()
        if row is None:
            return None
        try:
            return self.project.open_sealed(row[0]).decode("utf-8")
        except Exception as exc:  # noqa: BLE001 - any failure means: this key cannot open it
            raise TokenError(f"the token cache {name} in {self.target.label} cannot be "
                             "decrypted with this project's key",
                             hint="run 'postline login' again to create a new one") from exc

    def save(self, name: str, cache_json: str) -> None:
        """Seal ``cache_json`` and store it as ``name`` (committed when this returns)."""
        sealed = self.project.seal(cache_json.encode("utf-8"))
        with self._conn() as conn:
            conn.execute(sql.SQL("INSERT INTO {}.tokens (name, sealed) VALUES (%s, %s) ON "
                                 "CONFLICT (name) DO UPDATE SET sealed=excluded.sealed, "
                                 "updated_at=now()").format(self._s), (name, sealed))

    def names(self) -> list[str]:
        with self._conn() as conn:
            return [r[0] for r in conn.execute(sql.SQL("SELECT name FROM {}.tokens ORDER BY "
                                                       "name").format(self._s))]

    @contextmanager
    def refresh_lock(self, name: str) -> Iterator[None]:
        """Hold the fleet-wide lock of cache ``name`` (waits for another instance's
        refresh to end)."""
        with self._conn() as conn:
            key = f"postline-token:{self.target.schema}:{name}"
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def shared_tokens(project: Any) -> SharedTokens | None:
    """The shared token caches of ``project`` (a postgresql StateStore), else None."""
    from postline.state.stores import shared_store

    if not hasattr(project, "seal") or shared_store(project) is None:
        return None
    return SharedTokens(project)
