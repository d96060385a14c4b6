"""The migration runner on the tests' real PostgreSQL: versioned, idempotent, one
transaction per step, safe when two instances migrate at once, refusing a newer schema."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from postline.errors import ConfigError
from postline.state.migrations import (
    MIGRATIONS,
    Migration,
    SchemaState,
    latest_version,
    migrate,
    schema_state,
)

STEPS = (
    Migration(version=1, description="one", statements=(
        "CREATE TABLE {schema}.one (id integer PRIMARY KEY)",)),
    Migration(version=2, description="two", statements=(
        "ALTER TABLE {schema}.one ADD COLUMN name text",
        "INSERT INTO {schema}.one (id, name) VALUES (1, 'first')")),
    Migration(version=3, description="three", statements=(
        "CREATE TABLE {schema}.three (id integer PRIMARY KEY)",)),
)


def _migrate(conn, steps, schema):
    return migrate(conn, steps, schema=schema, label="StateStore/T", where="test")


def _versions(conn, schema) -> list[tuple[int, str]]:
    return conn.execute(sql.SQL("SELECT version, description FROM {}.schema_version ORDER BY "
                                "version").format(sql.Identifier(schema))).fetchall()


@pytest.fixture
def conn(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as c:
        yield c


def test_steps_apply_in_order_once(conn, schema):
    assert schema_state(conn, STEPS, schema=schema).state == SchemaState.MISSING
    first = _migrate(conn, STEPS[:2], schema)
    assert (first.before, first.after, first.created_schema) == (0, 2, True)
    assert [m.version for m in first.applied] == [1, 2]
    status = schema_state(conn, STEPS, schema=schema)
    assert (status.state, status.version, status.latest) == (SchemaState.BEHIND, 2, 3)
    second = _migrate(conn, STEPS, schema)
    assert (second.before, second.after, [m.version for m in second.applied]) == (2, 3, [3])
    again = _migrate(conn, STEPS, schema)
    assert (again.applied, again.created_schema, again.after) == ((), False, 3)
    assert _versions(conn, schema) == [(1, "one"), (2, "two"), (3, "three")]
    assert conn.execute(sql.SQL("SELECT id, name FROM {}.one").format(
        sql.Identifier(schema))).fetchall() == [(1, "first")]
    assert schema_state(conn, STEPS, schema=schema).state == SchemaState.CURRENT


def test_a_failing_step_leaves_the_earlier_ones_and_nothing_of_itself(conn, schema):
    broken = STEPS[:2] + (Migration(version=3, description="broken", statements=(
        "CREATE TABLE {schema}.half (id integer)", "SELECT no_such_function()")),)
    with pytest.raises(psycopg.errors.UndefinedFunction):
        _migrate(conn, broken, schema)
    assert _versions(conn, schema) == [(1, "one"), (2, "two")]
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.half",)).fetchone() == (None,)
    assert [m.version for m in _migrate(conn, STEPS, schema).applied] == [3]


def test_two_instances_migrating_at_once_apply_each_step_once(pg_url, schema):
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def instance() -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as c:
                barrier.wait()
                applied.append([m.version for m in _migrate(c, STEPS, schema).applied])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=instance) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(v for one in applied for v in one) == [1, 2, 3]
    with psycopg.connect(pg_url) as c:
        assert [v for v, _ in _versions(c, schema)] == [1, 2, 3]


def test_a_newer_schema_is_refused_before_anything_is_written(conn, schema):
    _migrate(conn, STEPS, schema)
    with pytest.raises(ConfigError) as err:   # an older postline that knows one step
        _migrate(conn, STEPS[:1], schema)
    assert str(err.value) == (f"StateStore/T: schema {schema} in test is at version 3 (written "
                              f"by postline 0.1.0), newer than this postline 0.1.0 knows (1) "
                              f"(upgrade postline here; an older postline never writes to a "
                              f"newer schema)")
    assert "\n" not in str(err.value)
    assert len(_versions(conn, schema)) == 3
    assert schema_state(conn, STEPS[:2], schema=schema).state == SchemaState.NEWER


def test_the_shipped_steps_create_the_state_tables(conn, schema):
    assert latest_version(MIGRATIONS) == 4
    _migrate(conn, MIGRATIONS, schema)
    tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                          "table_schema = %s ORDER BY 1", (schema,)).fetchall()
    assert tables == [("folder_state",), ("folders",), ("instances",), ("leases",),
                      ("mails",), ("meta",), ("outbox",), ("outbox_sends",),
                      ("schema_version",), ("tokens",)]
    assert conn.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = 'created_by'").format(
        sql.Identifier(schema))).fetchone() == ("postline 0.1.0",)


def test_misnumbered_steps_and_a_connection_in_a_transaction_are_bugs(pg_url, schema):
    with pytest.raises(ValueError, match=r"numbered 1..n in order, got \[1, 3\]"):
        latest_version((STEPS[0], STEPS[2]))
    with psycopg.connect(pg_url) as c:  # not autocommit
        with pytest.raises(ValueError, match="autocommit"):
            _migrate(c, STEPS, schema)
