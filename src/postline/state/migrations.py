"""postline's tables in a StateStore's schema: created and upgraded by numbered steps.

The schema holds a ``schema_version`` table with one row per step applied (version,
description, the postline version that applied it, when). :func:`migrate` applies the steps
a database lacks, each in its own transaction under an advisory lock (two instances starting
at once apply every step exactly once); a database at a version newer than the steps this
postline knows is refused with one line, before anything is written. :func:`schema_state`
reads where a database stands without changing it (``test-connection``).

A step is SQL with ``{schema}`` where the (quoted) schema name goes::

    Migration(version=2, description="ledger: one row per mail",
              statements=("CREATE TABLE {schema}.ledger (key text PRIMARY KEY, ...)",))

Steps are append-only: a released step never changes, a new version follows it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from postline.errors import ConfigError
from postline.version import __version__

VERSION_TABLE = "schema_version"


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One numbered step: SQL statements (``{schema}`` is the quoted schema name) and/or a
    function ``apply(conn, schema_identifier)``, run in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...] = ()
    apply: Callable[[psycopg.Connection, sql.Identifier], None] | None = field(
        default=None, compare=False)


# Version 1 creates the meta table (facts about this state: who created it, when); later
# versions add the ledger and the fleet's tables.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, description="meta: facts about this state", statements=(
        "CREATE TABLE {schema}.meta (key text PRIMARY KEY, value text NOT NULL, "
        "updated_at timestamptz NOT NULL DEFAULT now())",
        "INSERT INTO {schema}.meta (key, value) VALUES ('created_by', 'postline "
        + __version__ + "')",
    )),
    # the ledger (state/pg_ledger.py): the SQLite ledger's tables, version 3 of its file.
    # Times stay Unix seconds (double precision) as there: Entry and prune speak them.
    Migration(version=2, description="ledger: one row per mail, folder versions and state",
              statements=(
        "CREATE TABLE {schema}.mails (source text NOT NULL, key text NOT NULL, "
        "state text NOT NULL, connection text NOT NULL DEFAULT '', folder text NOT NULL "
        "DEFAULT '', folder_version text NOT NULL DEFAULT '', server_id text NOT NULL "
        "DEFAULT '', reason text, attempts integer NOT NULL DEFAULT 0, message_id text, "
        "content_hash text, subject text, settled boolean NOT NULL DEFAULT false, "
        "dup_of text, created double precision NOT NULL, updated double precision NOT NULL, "
        "fingerprint text, seq bigserial, PRIMARY KEY (source, key))",
        "CREATE INDEX mails_mid ON {schema}.mails (source, message_id)",
        "CREATE INDEX mails_state ON {schema}.mails (source, state, created)",
        "CREATE INDEX mails_created ON {schema}.mails (source, created)",
        "CREATE INDEX mails_updated ON {schema}.mails (source, updated)",
        "CREATE INDEX mails_pending ON {schema}.mails (source, folder) WHERE NOT settled",
        "CREATE INDEX mails_dup ON {schema}.mails (source, dup_of) WHERE dup_of IS NOT NULL",
        "CREATE TABLE {schema}.folders (source text NOT NULL, folder text NOT NULL, "
        "version text NOT NULL, PRIMARY KEY (source, folder))",
        "CREATE TABLE {schema}.folder_state (source text NOT NULL, folder text NOT NULL, "
        "name text NOT NULL, value text NOT NULL, PRIMARY KEY (source, folder, name))",
    )),
    # the fleet (state/leases.py): who runs, who owns which source, by the database clock
    Migration(version=3, description="fleet: instances and source leases with fencing tokens",
              statements=(
        "CREATE TABLE {schema}.instances (name text PRIMARY KEY, host text NOT NULL, "
        "pid integer NOT NULL, version text NOT NULL, assets_hash text NOT NULL, "
        "started_at timestamptz NOT NULL DEFAULT now(), "
        "heartbeat_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE {schema}.leases (source text PRIMARY KEY, owner text, "
        "token bigint NOT NULL, expires_at timestamptz NOT NULL, "
        "acquired_at timestamptz NOT NULL DEFAULT now(), last_round_at timestamptz)",
    )),
    # the shared outbox (state/pg_outbox.py): rows claimed by one deliverer at a time;
    # outbox_sends is the fleet's sliding window of a service's throttle; tokens holds
    # the sealed device-flow token caches
    Migration(version=4, description="outbox: SendAndForget mails, the fleet's throttle, "
                                     "sealed token caches", statements=(
        "CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, service text NOT NULL, "
        "state text NOT NULL, message_id text NOT NULL, date text NOT NULL, "
        "message text NOT NULL, summary text NOT NULL DEFAULT '', attempts integer NOT NULL "
        "DEFAULT 0, next_attempt_at double precision NOT NULL DEFAULT 0, created_at double "
        "precision NOT NULL, updated_at double precision NOT NULL, reason text NOT NULL "
        "DEFAULT '', result text NOT NULL DEFAULT '', claimed_by text, "
        "claimed_until timestamptz)",
        "CREATE INDEX outbox_by_state ON {schema}.outbox (service, state, next_attempt_at, "
        "id)",
        "CREATE TABLE {schema}.outbox_sends (service text NOT NULL, at double precision "
        "NOT NULL)",
        "CREATE INDEX outbox_sends_by_time ON {schema}.outbox_sends (service, at)",
        "CREATE TABLE {schema}.tokens (name text PRIMARY KEY, sealed text NOT NULL, "
        "updated_at timestamptz NOT NULL DEFAULT now())",
    )),
)


class SchemaState(enum.StrEnum):
    """Where a database's schema stands against the steps this postline knows."""

    MISSING = "missing"    # no schema_version table yet: migrate creates everything
    BEHIND = "behind"      # older: migrate applies the missing steps
    CURRENT = "current"
    NEWER = "newer"        # written by a newer postline: refused


@dataclass(frozen=True, kw_only=True)
class SchemaStatus:
    """The version found (0 when none), the latest this postline knows, and the state."""

    schema: str
    version: int
    latest: int
    state: SchemaState
    written_by: str | None = None    # the postline version that applied the newest step

    def as_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "version": self.version, "latest": self.latest,
                "state": str(self.state), "written_by": self.written_by}


@dataclass(frozen=True, kw_only=True)
class MigrationResult:
    """What :func:`migrate` did: the version before and after, the steps it applied."""

    schema: str
    before: int
    after: int
    applied: tuple[Migration, ...]
    created_schema: bool


def latest_version(migrations: Sequence[Migration]) -> int:
    """The newest version in ``migrations``. Raises ValueError unless they are 1..n in order."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {versions}")
    return len(versions)


def schema_state(conn: psycopg.Connection, migrations: Sequence[Migration], *,
                 schema: str) -> SchemaStatus:
    """Where ``schema`` stands, read-only. Raises psycopg errors (the caller words them)."""
    latest = latest_version(migrations)
    version, written_by = _current(conn, schema)
    if version is None:
        state, version = SchemaState.MISSING, 0
    elif version > latest:
        state = SchemaState.NEWER
    elif version < latest:
        state = SchemaState.BEHIND
    else:
        state = SchemaState.CURRENT
    return SchemaStatus(schema=schema, version=version, latest=latest, state=state,
                        written_by=written_by)


def migrate(conn: psycopg.Connection, migrations: Sequence[Migration], *, schema: str,
            label: str, where: str) -> MigrationResult:
    """Create ``schema`` and apply the steps it lacks, one transaction each.

    ``label`` (``StateStore/Shared``) and ``where`` (``host:port/db``) go into messages.
    ``conn`` must be in autocommit mode (each step is an explicit transaction). Returns what
    was done (nothing, when current).
    Raises ConfigError when the schema is newer than ``migrations`` or the role may not
    create the schema or its tables (naming the GRANT that fixes it).
    """
    latest = latest_version(migrations)
    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("migrate() needs an autocommit connection outside a transaction")
    ident = sql.Identifier(schema)
    newer_check = _refuse_newer(label=label, where=where, schema=schema, latest=latest)
    created = False
    applied = []
    try:
        before, before_by = _current(conn, schema)
        if before is not None:
            newer_check(before, before_by)
        with conn.transaction():
            _lock(conn, schema)
            if not _schema_exists(conn, schema):
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
                created = True
            if _current(conn, schema)[0] is None:
                conn.execute(sql.SQL(
                    "CREATE TABLE {}.{} (version integer PRIMARY KEY, description text NOT NULL,"
                    " postline_version text NOT NULL, applied_at timestamptz NOT NULL "
                    "DEFAULT now())").format(ident, sql.Identifier(VERSION_TABLE)))
        for step in migrations:
            with conn.transaction():
                _lock(conn, schema)
                # read again under the lock: another instance may have applied it meanwhile
                now, by = _current(conn, schema)
                now = now or 0
                newer_check(now, by)
                if now >= step.version:
                    continue
                for statement in step.statements:
                    conn.execute(sql.SQL(statement).format(schema=ident))  # type: ignore[arg-type]
                if step.apply is not None:
                    step.apply(conn, ident)
                conn.execute(sql.SQL("INSERT INTO {}.{} (version, description, postline_version)"
                                     " VALUES (%s, %s, %s)").format(
                    ident, sql.Identifier(VERSION_TABLE)),
                    (step.version, step.description, __version__))
            applied.append(step)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise no_privilege(label=label, where=where, schema=schema, conn=conn) from exc
    after, _ = _current(conn, schema)
    return MigrationResult(schema=schema, before=before or 0, after=after or 0,
                           applied=tuple(applied), created_schema=created)


def no_privilege(*, label: str, where: str, schema: str, conn: psycopg.Connection
                 ) -> ConfigError:
    """The one-line error for a role that may not create ``schema``, or use it, or create
    tables in it (``conn`` must be usable: autocommit, or outside a failed transaction)."""
    user = conn.info.user
    database = conn.info.dbname
    if _schema_exists(conn, schema):
        usage = conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()
        what = "create tables in" if usage and usage[0] else "use"
        return ConfigError(f"{label}: role {user} may not {what} schema {schema} of {where}",
                           hint=f"grant it: GRANT CREATE, USAGE ON SCHEMA {schema} TO {user} "
                                f"(or ALTER SCHEMA {schema} OWNER TO {user})")
    return ConfigError(f"{label}: role {user} may not create schema {schema} in {where}",
                       hint=f"grant it: GRANT CREATE ON DATABASE {database} TO {user} (or "
                            f"create it: CREATE SCHEMA {schema} AUTHORIZATION {user})")


def _refuse_newer(*, label: str, where: str, schema: str, latest: int):
    def check(version: int, written_by: str | None) -> None:
        if version > latest:
            by = f" by postline {written_by}" if written_by else ""
            raise ConfigError(
                f"{label}: schema {schema} in {where} is at version {version} (written{by}), "
                f"newer than this postline {__version__} knows ({latest})",
                hint="upgrade postline here; an older postline never writes to a newer schema")
    return check


def refuse_newer(status: SchemaStatus, *, label: str, where: str) -> None:
    """Raise the one-line ConfigError when ``status`` is NEWER; else nothing."""
    _refuse_newer(label=label, where=where, schema=status.schema,
                  latest=status.latest)(status.version, status.written_by)


def _lock(conn: psycopg.Connection, schema: str) -> None:
    # one migrating instance per schema at a time; freed at the end of the transaction
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"postline-migrate:{schema}",))


def _schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                        (schema,)).fetchone() is not None


def _current(conn: psycopg.Connection, schema: str) -> tuple[int | None, str | None]:
    """(the newest version applied, the postline that applied it); (None, None) when the
    schema or its version table does not exist."""
    table = f"{_quote(schema)}.{VERSION_TABLE}"
    found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    if not found or found[0] is None:
        return None, None
    row = conn.execute(sql.SQL("SELECT version, postline_version FROM {}.{} ORDER BY version "
                               "DESC LIMIT 1").format(sql.Identifier(schema),
                                                      sql.Identifier(VERSION_TABLE))).fetchone()
    return (row[0], row[1]) if row else (0, None)


def _quote(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'
