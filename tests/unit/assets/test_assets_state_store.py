"""The StateStore asset kind: fields, defaults, one per project, POSTLINE_STATE_URL, show."""

from __future__ import annotations

import json

import pytest
from asset_helpers import messages

from postline.cli import main

PG = """
kind: StateStore
name: Shared
type: postgresql
url: postgresql://app@db.example.com:5433/postline
"""


def test_defaults_of_a_postgresql_store(load):
    p = load({"s.yaml": PG})
    assert p.errors == []
    store = p.get("StateStore", "Shared")
    assert (store.type, store.schema_name, store.lease_seconds, store.heartbeat) == \
        ("postgresql", "postline", 30, 10.0)
    assert store.location == "db.example.com:5433/postline"


def test_sqlite_is_the_default_and_takes_no_url(load):
    p = load({"s.yaml": "kind: StateStore\nname: Local\n"})
    assert p.errors == [] and p.get("StateStore", "Local").type == "sqlite"
    p = load({"s.yaml": "kind: StateStore\nname: Local\nurl: postgresql://h/db\n"})
    assert messages(p) == ["s.yaml:3: StateStore/Local: url: applies only to type: postgresql "
                           "(add 'type: postgresql', or remove it)"]


@pytest.mark.parametrize(("url", "error"), [
    ("mysql://h/db", "url: must start with postgresql:// (got mysql:); write it as "
                     "postgresql://user@host:5432/database"),
    ("postgresql:///db", "url: names no host; write it as postgresql://user@host:5432/database"),
    ("postgresql://h:5432", "url: names no database after the host; write it as "
                            "postgresql://user@host:5432/database"),
    ("postgresql://h:port/db", "url: is not a valid URL (Port could not be cast to integer "
                               "value as 'port'); write it as postgresql://user@host:5432/database"),
])
def test_a_wrong_url_is_one_line_naming_the_field(load, url, error):
    p = load({"s.yaml": PG.replace("postgresql://app@db.example.com:5433/postline", url)})
    assert messages(p) == [f"s.yaml:4: StateStore/Shared: {error}"]


def test_postgresql_needs_a_url_and_one_password(load):
    p = load({"s.yaml": "kind: StateStore\nname: Shared\ntype: postgresql\n"})
    assert messages(p) == ["s.yaml:1: StateStore/Shared: url: is required for type: postgresql "
                           "(postgresql://user@host:5432/database); or set POSTLINE_STATE_URL"]
    p = load({"s.yaml": PG.replace("app@", "app:pw@") + "password: Db.password\n",
              "d.yaml": "kind: Secret\nname: Db\nvalues: {password: env:DB_PW}\n"},
             environ={"DB_PW": "x"})
    assert messages(p) == ["s.yaml:5: StateStore/Shared: password: is also given inside url: "
                           "keep one of them"]


def test_heartbeat_must_be_less_than_the_lease(load):
    p = load({"s.yaml": PG + "lease_seconds: 6\nheartbeat_seconds: 6\n"})
    assert messages(p) == ["s.yaml:6: StateStore/Shared: heartbeat_seconds: must be less than "
                           "lease_seconds (6)"]
    p = load({"s.yaml": PG + "lease_seconds: 5\n"})
    assert p.get("StateStore", "Shared").heartbeat == pytest.approx(5 / 3)


def test_schema_must_be_a_plain_identifier(load):
    p = load({"s.yaml": PG + "schema: Post-Line\n"})
    assert len(p.errors) == 1 and p.errors[0].field == "schema"


def test_a_second_state_store_is_an_error_naming_both(load):
    p = load({"s.yaml": PG, "t.yaml": PG.replace("Shared", "Other")})
    assert messages(p) == ["t.yaml:2: StateStore/Other: kind: a project has at most one "
                           "StateStore: StateStore/Other here and StateStore/Shared at s.yaml:1; "
                           "remove one"]


def test_postline_state_url_replaces_the_url(load):
    env = {"POSTLINE_STATE_URL": "postgresql://u:pw@other.example.com/state"}
    p = load({"s.yaml": PG}, environ=env)
    assert p.errors == []
    assert p.get("StateStore", "Shared").location == "other.example.com:5432/state"
    # a store written without a url gets it from the environment alone
    p = load({"s.yaml": "kind: StateStore\nname: S\ntype: postgresql\n"}, environ=env)
    assert p.errors == [] and p.get("StateStore", "S").url == env["POSTLINE_STATE_URL"]
    # a wrong value says where it came from
    p = load({"s.yaml": PG}, environ={"POSTLINE_STATE_URL": "postgres://h"})
    assert messages(p) == ["s.yaml:4: StateStore/Shared: url: names no database after the host; "
                           "write it as postgresql://user@host:5432/database (the value comes "
                           "from POSTLINE_STATE_URL)"]


def test_postline_state_url_without_a_state_store_warns(load):
    p = load({"e.yaml": "kind: Environment\nname: E\n"},
             environ={"POSTLINE_STATE_URL": "postgresql://h/db"})
    assert p.errors == []
    assert [w.message for w in p.warnings] == [
        "POSTLINE_STATE_URL is set, but the project has no StateStore asset, so it is ignored "
        "(add a StateStore to use it)"]


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_masks_the_password_in_the_url(project_dir, capsys, monkeypatch):
    monkeypatch.delenv("POSTLINE_STATE_URL", raising=False)
    root = project_dir({"s.yaml": PG.replace("app@", "app:Sup3r%2Fsecret@")})
    code, out, err = _cli(capsys, "show", str(root), "Shared")
    assert code == 0 and "Sup3r" not in out + err
    assert out.splitlines()[1:] == [
        "kind: StateStore", "name: Shared", "type: postgresql",
        "url: postgresql://app:***@db.example.com:5433/postline",
        "schema: postline (default)", "lease_seconds: 30 (default)",
        "heartbeat_seconds: 10.0 (default: a third of lease_seconds)",
        "connect_timeout: 10.0 (default)"]
    monkeypatch.setenv("POSTLINE_STATE_URL", "postgresql://u:Env-S3cret@h2:6543/db2")
    code, out, err = _cli(capsys, "show", str(root), "Shared", "--json")
    data = json.loads(out)
    assert "S3cret" not in out + err
    assert data["asset"]["url"] == "postgresql://u:***@h2:6543/db2"
    assert data["notes"]["url"] == "from POSTLINE_STATE_URL"


def test_validate_assets_usage_know_the_kind(project_dir, capsys, monkeypatch):
    monkeypatch.delenv("POSTLINE_STATE_URL", raising=False)
    root = project_dir({"s.yaml": PG + "password: Db.password\n",
                        "d.yaml": "kind: Secret\nname: Db\nvalues: {password: sealed:abc}\n"})
    code, out, err = _cli(capsys, "validate", str(root))
    assert code == 0, err
    code, out, _ = _cli(capsys, "assets", str(root), "--json")
    assert {(r["kind"], r["name"], r["used_by"]) for r in json.loads(out)} == {
        ("StateStore", "Shared", 0), ("Secret", "Db", 1)}
    code, out, _ = _cli(capsys, "usage", str(root), "Db")
    assert "StateStore/Shared  password -> Db.password" in out
    code, out, _ = _cli(capsys, "show", str(root), "Shared")
    assert "password: Db.password (sealed)" in out


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:p%40ss@h:5432/db?sslmode=require",
     "postgresql://u:***@h:5432/db?sslmode=require"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://h/db", "postgresql://h/db"),
    ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
])
def test_mask_url(url, shown):
    from postline.assets.kinds.state_store import mask_url

    assert mask_url(url) == shown
