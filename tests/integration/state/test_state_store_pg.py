"""A StateStore on the tests' real PostgreSQL: test-connection and `state migrate`, each
failure as one line naming the StateStore and the fix."""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from postline.cli import main
from postline.testing.ports import free_port


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_test_connection_then_migrate_then_current(store_project, schema, capsys, pg_server):
    root = store_project()
    code, out, err = run(capsys, "test-connection", str(root), "Shared")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == (f"Shared postgresql 127.0.0.1:{pg_server.port}/postline, user postline, "
                        f"schema {schema}")
    assert [ln.split()[1] for ln in lines[1:5]] == ["dns", "tcp", "login", "schema"]
    assert "PostgreSQL 15." in lines[3] and "as postline, database postline" in lines[3]
    assert lines[4].endswith(f"{schema} does not exist yet (this postline creates version 4); "
                             f"create it with: postline state migrate {root}")
    assert lines[5].strip() == "PASSED (schema not current)"

    code, out, err = run(capsys, "state", "migrate", str(root))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"StateStore/Shared: created schema {schema} in 127.0.0.1:{pg_server.port}/postline",
        "  applied version 1: meta: facts about this state",
        "  applied version 2: ledger: one row per mail, folder versions and state",
        "  applied version 3: fleet: instances and source leases with fencing tokens",
        "  applied version 4: outbox: SendAndForget mails, the fleet's throttle, sealed "
        "token caches",
        f"StateStore/Shared: schema {schema} is at version 4 (was 0): current"]
    code, out, _ = run(capsys, "state", "migrate", str(root))
    assert out == (f"StateStore/Shared: schema {schema} in 127.0.0.1:{pg_server.port}/postline "
                   "is at version 4: current, nothing to do\n")

    code, out, _ = run(capsys, "test-connection", str(root), "Shared", "--json")
    report = json.loads(out)
    assert code == 0
    assert {k: report[k] for k in ("state_store", "ok", "schema", "schema_version",
                                   "latest_version", "schema_state", "current", "url")} == {
        "state_store": "Shared", "ok": True, "schema": schema, "schema_version": 4,
        "latest_version": 4, "schema_state": "current", "current": True,
        "url": f"postgresql://postline:***@127.0.0.1:{pg_server.port}/postline"}
    assert report["server_version"].startswith("15.")
    assert "postline-pass" not in out


def test_wrong_password(store_project, capsys, pg_server):
    root = store_project(url=pg_server.url.replace("postline-pass", "wrong-pass"))
    code, out, err = run(capsys, "test-connection", str(root), "Shared")
    assert code == 1 and "wrong-pass" not in out + err
    assert out.splitlines()[3].split()[:2] == ["✗", "login"]
    assert out.splitlines()[4].strip() == "FAILED"
    assert out.splitlines()[3].endswith(
        f"StateStore/Shared: PostgreSQL refused the password as postline to "
        f"127.0.0.1:{pg_server.port}/postline (password from the url)")
    assert out.splitlines()[5].strip() == "fix: fix the password in the StateStore's url"
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert (code, out) == (1, "")
    assert err == (f"postline: error: StateStore/Shared: PostgreSQL refused the password as "
                   f"postline to 127.0.0.1:{pg_server.port}/postline (password from the url) "
                   f"(fix the password in the StateStore's url)\n")


def test_wrong_password_from_a_secret_names_the_secret(store_project, capsys, pg_server,
                                                       monkeypatch):
    url = pg_server.url.replace(":postline-pass@", "@")
    root = store_project(url=url, extra="""\
        password: DbSecrets.password
        ---
        kind: Secret
        name: DbSecrets
        values: {password: env:TEST_DB_PASSWORD}
        """)
    monkeypatch.setenv("TEST_DB_PASSWORD", "postline-pass")
    assert run(capsys, "test-connection", str(root), "Shared")[0] == 0
    monkeypatch.setenv("TEST_DB_PASSWORD", "not-it")
    code, _, err = run(capsys, "state", "migrate", str(root))
    assert code == 1 and "not-it" not in err
    assert err.endswith("(password from Secret DbSecrets.password) (set it with: postline "
                        "secret set PROJECT DbSecrets password)\n")


def test_unreachable_port(store_project, capsys):
    port = free_port()
    root = store_project(url=f"postgresql://postline:x@127.0.0.1:{port}/postline")
    code, out, err = run(capsys, "test-connection", str(root), "Shared")
    assert code == 1
    assert out.splitlines()[2].endswith(f"StateStore/Shared: cannot reach PostgreSQL at "
                                        f"127.0.0.1:{port} (connection refused)")
    assert "fix: is the server running there? check the host and port in the StateStore's url" \
        in out
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert code == 1 and err.count("\n") == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:" in err


def test_unknown_host_and_database(store_project, capsys, pg_server):
    root = store_project(url="postgresql://u:p@no-such-host.invalid/db")
    code, out, _ = run(capsys, "test-connection", str(root), "Shared", "--json")
    report = json.loads(out)
    assert code == 1 and report["error"].startswith(
        "StateStore/Shared: host no-such-host.invalid does not resolve")
    assert [s["step"] for s in report["steps"]] == ["dns"]
    root = store_project(url=pg_server.admin_url.rsplit("/", 1)[0] + "/nodb")
    code, _, err = run(capsys, "state", "migrate", str(root))
    assert code == 1
    assert err == (f"postline: error: StateStore/Shared: database nodb does not exist on "
                   f"127.0.0.1:{pg_server.port} (create it (CREATE DATABASE nodb OWNER postgres)"
                   f" or fix the database in the StateStore's url)\n")


def test_a_role_without_create_on_the_database(store_project, weak_role, schema, capsys):
    url = weak_role()
    user = url.split("//", 1)[1].split(":", 1)[0]
    root = store_project(url=url)
    code, out, err = run(capsys, "test-connection", str(root), "Shared")
    assert code == 1
    assert out.splitlines()[4].endswith(f"StateStore/Shared: role {user} may not create schema "
                                        f"{schema} in 127.0.0.1:{url.split(':')[3]}")
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert code == 1 and err.count("\n") == 1
    assert err.endswith(f"may not create schema {schema} in 127.0.0.1:{url.split(':')[3]} "
                        f"(grant it: GRANT CREATE ON DATABASE postline TO {user} (or create it: "
                        f"CREATE SCHEMA {schema} AUTHORIZATION {user}))\n")


def test_a_schema_made_for_the_role_but_without_create_in_it(store_project, weak_role, schema,
                                                             admin, capsys):
    url = weak_role()
    user = url.split("//", 1)[1].split(":", 1)[0]
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema),
                                                                   sql.Identifier(user)))
    root = store_project(url=url)
    code, _, err = run(capsys, "state", "migrate", str(root))
    assert code == 1
    assert f"role {user} may not create tables in schema {schema} of" in err
    assert f"GRANT CREATE, USAGE ON SCHEMA {schema} TO {user}" in err
    # granted by the DBA: now it works, in a schema the role does not own
    admin.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema),
                                                                    sql.Identifier(user)))
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert code == 0, err
    assert "created schema" not in out and "applied version 1" in out


def test_a_newer_schema_is_refused(store_project, schema, admin, capsys, pg_server):
    root = store_project()
    assert run(capsys, "state", "migrate", str(root))[0] == 0
    admin.execute(sql.SQL("INSERT INTO {}.schema_version (version, description, "
                          "postline_version) VALUES (7, 'from the future', '9.9.0')").format(
        sql.Identifier(schema)))
    line = (f"StateStore/Shared: schema {schema} in 127.0.0.1:{pg_server.port}/postline is at "
            f"version 7 (written by postline 9.9.0), newer than this postline 0.1.0 knows (4)")
    fix = "upgrade postline here; an older postline never writes to a newer schema"
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert (code, err) == (1, f"postline: error: {line} ({fix})\n")
    code, out, _ = run(capsys, "test-connection", str(root), "Shared")
    assert code == 1 and out.splitlines()[4].endswith(line) and f"fix: {fix}" in out
    assert json.loads(run(capsys, "test-connection", str(root), "Shared", "--json")[1])[
        "schema_state"] == "newer"


def test_postline_state_url_overrides_the_url(store_project, capsys, monkeypatch, pg_url,
                                              pg_server):
    root = store_project(url=f"postgresql://postline:x@127.0.0.1:{free_port()}/postline")
    monkeypatch.setenv("POSTLINE_STATE_URL", pg_url)
    code, out, err = run(capsys, "test-connection", str(root), "Shared")
    assert code == 0, out + err
    code, out, _ = run(capsys, "show", str(root), "Shared")
    assert (f"url: postgresql://postline:***@127.0.0.1:{pg_server.port}/postline (from "
            "POSTLINE_STATE_URL)") in out
    monkeypatch.setenv("POSTLINE_STATE_URL", pg_url.replace("postline-pass", "wrong-pass-for-this-test"))
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert code == 1 and err.endswith("(password from POSTLINE_STATE_URL) (fix the password in "
                                      "POSTLINE_STATE_URL)\n")


def test_state_migrate_without_a_postgresql_store(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("kind: StateStore\nname: Local\n")
    code, _, err = run(capsys, "state", "migrate", str(tmp_path))
    assert (code, err) == (1, "postline: error: StateStore/Local has type sqlite: there is no "
                              "server to connect to (set 'type: postgresql' and a url to share "
                              "the state)\n")
    (tmp_path / "s.yaml").write_text("kind: Environment\nname: E\n")
    code, _, err = run(capsys, "state", "migrate", str(tmp_path))
    assert code == 1 and "has no StateStore asset" in err


def test_a_pool_from_the_store_and_its_first_login_checked(store_project, pg_server):
    from postline.errors import AuthError
    from postline.logs import redact
    from postline.project import open_project
    from postline.state.postgres import open_pool, target_of

    target = target_of(open_project(store_project()))
    assert "postline-pass" not in repr(target)
    assert redact("login with postline-pass") == "login with ***"   # no log line shows it
    with open_pool(target, max_size=2) as pool:
        with pool.connection() as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == \
                ("postline",)
    bad = target_of(open_project(store_project(url=pg_server.url.replace("-pass", "-no"))))
    with pytest.raises(AuthError, match=r"^StateStore/Shared: PostgreSQL refused the password"):
        open_pool(bad)


def test_a_schema_the_role_may_not_use(store_project, weak_role, schema, admin, capsys):
    url = weak_role()
    user = url.split("//", 1)[1].split(":", 1)[0]
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("CREATE TABLE {}.schema_version (version integer)").format(
        sql.Identifier(schema)))
    root = store_project(url=url)
    line = f"StateStore/Shared: role {user} may not use schema {schema} of 127.0.0.1:"
    fix = f"(grant it: GRANT CREATE, USAGE ON SCHEMA {schema} TO {user} (or ALTER SCHEMA"
    code, out, err = run(capsys, "state", "migrate", str(root))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"postline: error: {line}") and fix in err
    code, out, _ = run(capsys, "test-connection", str(root), "Shared")
    assert code == 1 and line in out.splitlines()[4] and "✗ schema" in out
