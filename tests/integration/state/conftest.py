"""Fixtures of the StateStore tests: a project with a StateStore in a schema of its own."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql


@pytest.fixture(autouse=True)
def _no_state_url(monkeypatch) -> None:
    monkeypatch.delenv("POSTLINE_STATE_URL", raising=False)


@pytest.fixture
def schema() -> str:
    """A schema name no other test uses (tests share the session's database)."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_project(tmp_path: Path, pg_url: str, schema: str) -> Callable[..., Path]:
    """``store_project(url=pg_url, extra="") -> Path``: a project with StateStore/Shared."""
    def make(url: str = pg_url, extra: str = "") -> Path:
        root = tmp_path / f"p-{uuid.uuid4().hex[:6]}"
        root.mkdir()
        (root / "state.yaml").write_text(textwrap.dedent(f"""\
            kind: StateStore
            name: Shared
            type: postgresql
            url: {url}
            schema: {schema}
            """) + textwrap.dedent(extra))
        return root
    return make


@pytest.fixture
def admin(pg_server):
    """An autocommit superuser connection to the session's database."""
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def weak_role(pg_server, admin) -> Callable[..., str]:
    """``weak_role(database="postline") -> url`` of a fresh role without CREATE on it."""
    made = []

    def make(database: str = "postline") -> str:
        name = f"weak_{uuid.uuid4().hex[:8]}"
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'weak-pass'").format(
            sql.Identifier(name)))
        made.append(name)
        return f"postgresql://{name}:weak-pass@{pg_server.host}:{pg_server.port}/{database}"
    yield make
    for name in made:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
