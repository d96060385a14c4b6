"""``postline test-connection PROJECT STATESTORE``: reach, log in, and see where the schema stands.

:func:`check` returns a :class:`StoreReport` with timed steps (``dns``, ``tcp``, ``login``,
``schema``) like the mail connections' report; a failed step carries the one-line error and
its fix. It never writes: a missing or older schema is reported (``postline state migrate``
creates or upgrades it), after checking that the role may do so.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import psycopg

from postline.errors import PostlineError
from postline.state.migrations import (
    MIGRATIONS,
    SchemaState,
    SchemaStatus,
    no_privilege,
    refuse_newer,
    schema_state,
)
from postline.state.postgres import Target, connect, query_failure, reach, shown_url
from postline.trace import Step, Trace


@dataclass
class StoreReport:
    """The outcome of testing one StateStore."""

    name: str
    url: str                          # password masked
    host: str = ""
    port: int = 0
    database: str = ""
    user: str = ""
    schema: str = ""
    ok: bool = False
    error: str | None = None
    hint: str | None = None
    server_version: str | None = None
    status: SchemaStatus | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def current(self) -> bool:
        return self.status is not None and self.status.state == SchemaState.CURRENT

    def as_dict(self) -> dict[str, Any]:
        return {"state_store": self.name, "type": "postgresql", "url": self.url,
                "host": self.host, "port": self.port, "database": self.database,
                "user": self.user, "ok": self.ok, "error": self.error, "hint": self.hint,
                "server_version": self.server_version, "schema": self.schema,
                "schema_version": self.status.version if self.status else None,
                "latest_version": self.status.latest if self.status else None,
                "schema_state": str(self.status.state) if self.status else None,
                "current": self.current, "steps": [s.as_dict() for s in self.steps]}


def check(project: Any, name: str, *, project_arg: str = "PROJECT") -> StoreReport:
    """Test StateStore ``name`` of ``project``. Never raises for a failed connection (the
    report says why); raises ConfigError when there is no such StateStore or it is sqlite,
    SecretError when its password cannot be read."""
    store = project.get("StateStore", name)
    target = Target.of(project, store)
    report = StoreReport(name=name, url=shown_url(store), host=target.host, port=target.port,
                         database=target.database, user=target.user, schema=target.schema)
    trace = Trace()
    try:
        _steps(target, report, trace, project_arg)
        report.ok = True
    except PostlineError as exc:
        report.error, report.hint = exc.message, exc.hint
        if trace.steps and trace.steps[-1].ok is False:
            trace.steps[-1].detail = exc.message
    report.steps = trace.steps
    return report


def _steps(target: Target, report: StoreReport, trace: Trace, project_arg: str) -> None:
    with trace.step("dns") as st:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            reach(target)   # raises the worded error
            raise
        st.detail = ", ".join(dict.fromkeys(str(i[4][0]) for i in infos))
    with trace.step("tcp") as st:
        reach(target)
        st.detail = f"{target.host}:{target.port} accepts connections"
    with trace.step("login") as st:
        conn = connect(target, autocommit=True)
        version = conn.info.server_version
        report.server_version = f"{version // 10000}.{version % 10000}"
        st.detail = f"PostgreSQL {report.server_version} as {conn.info.user}, database " \
                    f"{conn.info.dbname}"
        st.data = {"server_version": report.server_version, "user": conn.info.user}
    with conn, trace.step("schema") as st:
        try:
            status = schema_state(conn, MIGRATIONS, schema=target.schema)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise no_privilege(label=target.label, where=target.where, schema=target.schema,
                               conn=conn) from exc
        except psycopg.Error as exc:
            raise query_failure(target, exc) from exc
        report.status = status
        st.data = status.as_dict()
        refuse_newer(status, label=target.label, where=target.where)
        if status.state == SchemaState.CURRENT:
            st.detail = f"{target.schema} at version {status.version}: current"
            return
        if not _may_migrate(conn, target.schema, status):
            raise no_privilege(label=target.label, where=target.where, schema=target.schema,
                               conn=conn)
        fix = f"create it with: postline state migrate {project_arg}"
        if status.state == SchemaState.MISSING:
            st.detail = f"{target.schema} does not exist yet (this postline creates version " \
                        f"{status.latest}); {fix}"
        else:
            st.detail = f"{target.schema} at version {status.version} of {status.latest}: " \
                        f"upgrade it with: postline state migrate {project_arg}"


def _may_migrate(conn: psycopg.Connection, schema: str, status: SchemaStatus) -> bool:
    """Whether the role may create the schema (or tables in it), without trying."""
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                          (schema,)).fetchone() is not None
    if not exists:
        row = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')"
                           ).fetchone()
    else:
        row = conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,)).fetchone()
    return bool(row and row[0])
