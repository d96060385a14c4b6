"""The dev stack's PostgreSQL: `postline dev-stack start` runs it, `env` prints its URL."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from postline.cli import main
from postline.testing.ports import listening_ports
from postline.testing.stack import Stack


@pytest.fixture
def stack_dir(mail_stack) -> Path:
    path = Path(tempfile.mkdtemp(prefix="postline-pgstack-"))
    os.chmod(path, 0o755)
    yield path / "devstack"
    Stack(dir=path / "devstack").stop()
    shutil.rmtree(path, ignore_errors=True)


def test_dev_stack_runs_postgres_with_a_password_role(stack_dir: Path, capsys) -> None:
    assert main(["dev-stack", "start", "--dir", str(stack_dir), "--random-ports"]) == 0
    out = capsys.readouterr().out
    assert "  postgres   127.0.0.1:" in out and "[postgres, pid " in out
    assert main(["dev-stack", "status", "--dir", str(stack_dir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    port = status["info"]["ports"]["postgres"]
    assert status["servers"]["postgres"]["running"] is True
    assert port in listening_ports()

    assert main(["dev-stack", "env", "--dir", str(stack_dir)]) == 0
    env = capsys.readouterr().out
    url = f"postgresql://postline:postline-pass@127.0.0.1:{port}/postline"
    assert f"export POSTLINE_STATE_URL={url}\n" in env
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == \
            ("postline", "postline")
        # only on loopback, the socket in the stack dir
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    assert (stack_dir / "postgres" / "run" / f".s.PGSQL.{port}").is_socket()
    # a password is needed (scram-sha-256), even over the socket
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace("postline-pass", "wrong"), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=str(stack_dir.resolve() / "postgres" / "run"), port=port,
                        user="postgres", dbname="postgres", connect_timeout=5)

    assert main(["dev-stack", "stop", "--dir", str(stack_dir)]) == 0
    assert port not in listening_ports()
    # a restart keeps the cluster (no second initdb) and the role
    assert main(["dev-stack", "start", "--dir", str(stack_dir), "--random-ports"]) == 0
    capsys.readouterr()
    info = Stack(dir=stack_dir).status().info
    with psycopg.connect(info.postgres_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_session_stack_has_no_postgres(mail_stack) -> None:
    # started lazily by pg_server instead, only when a test asks for it
    assert "postgres" not in mail_stack.ports and mail_stack.postgres_url is None


def test_pg_fixture_gives_a_working_url(pg_server, pg_url: str) -> None:
    with psycopg.connect(pg_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postline",)
    with psycopg.connect(pg_server.admin_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (True,)


def test_a_directory_postgres_cannot_enter_is_named_with_the_fix() -> None:
    from postline.testing.errors import StackError
    from postline.testing.postgres import DevPostgres

    if os.geteuid() != 0:
        pytest.skip("only as root does the server run as another user")
    parent = Path(tempfile.mkdtemp(prefix="postline-pgdir-"))   # pytest's tmp_path is 0700
    try:
        os.chmod(parent, 0o755)
        closed = parent / "closed"
        closed.mkdir(mode=0o700)
        with pytest.raises(StackError, match=rf"^PostgreSQL runs as user postgres, which cannot "
                                             rf"enter {closed}; choose another directory or "
                                             rf"run: chmod o\+x {closed}$"):
            DevPostgres(dir=closed / "pg", port=15432).prepare()
    finally:
        shutil.rmtree(parent, ignore_errors=True)
