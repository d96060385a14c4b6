"""Validation says everything at once (issue 13): did-you-mean for macros, every problem of
an asset in one pass, the duplicate-name line, and what a project directory is."""

from __future__ import annotations

import pytest
from asset_helpers import CONN, SECRETS, messages

from postline.cli import main
from postline.errors import ConfigError
from postline.project import load_project

ENV = """
kind: Environment
name: Stack
variables:
  MAIL_HOST: 127.0.0.1
"""


def _conn(host: str, port: str = "993") -> str:
    return CONN.replace("host: imap.example.com", f"host: {host}\n  port: {port}")


def test_a_misspelt_environment_variable_suggests_the_one_that_exists(load):
    p = load({"c.yaml": _conn("${lay:MAIL_HOTS}"), "e.yaml": ENV, "s.yaml": SECRETS})
    assert messages(p) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.host: undefined macro ${lay:MAIL_HOTS}: "
        "no Environment asset defines it (did you mean ${lay:MAIL_HOST}?)"]


def test_a_misspelt_prefix_suggests_env_and_quotes_the_macro_as_written(load):
    p = load({"c.yaml": _conn("${evn:HOME}", "${evn:IMAP_PORT:-993}"), "s.yaml": SECRETS})
    assert messages(p) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.host: unknown macro prefix 'evn' in "
        "'${evn:HOME}' (did you mean 'env'? known: date, env, lay, mail, sec)",
        "c.yaml:6: EmailConnection/Mailbox: incoming.port: unknown macro prefix 'evn' in "
        "'${evn:IMAP_PORT:-993}' (did you mean 'env'? known: date, env, lay, mail, sec)"]


def test_misspelt_environment_and_secret_names_are_suggested(load):
    p = load({"c.yaml": _conn("${env:HOEM}", "${sec:pasword}"), "s.yaml": SECRETS})
    assert messages(p) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.host: undefined macro ${env:HOEM}: "
        "environment variable HOEM is not set (did you mean ${env:HOME}?)",
        "c.yaml:6: EmailConnection/Mailbox: incoming.port: undefined macro ${sec:pasword}: "
        "no Secret asset has that key (did you mean ${sec:password}?)"]


def test_nothing_close_keeps_the_default_advice(load):
    p = load({"c.yaml": _conn("${lay:SOMETHING_ELSE}"), "e.yaml": ENV, "s.yaml": SECRETS})
    assert messages(p) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.host: undefined macro "
        "${lay:SOMETHING_ELSE}: no Environment asset defines it (give a default with "
        "${lay:SOMETHING_ELSE:-value})"]


WORKFLOW = """
kind: EmailSource
name: In
connection: Mailbox
---
kind: Workflow
name: Flow
source: In
bogus: 1
processor: processors/missing.py
sinks: [{type: stdout}]
"""


def test_a_workflow_with_one_error_still_reports_its_missing_processor(load):
    p = load({"c.yaml": CONN, "s.yaml": SECRETS, "w.yaml": WORKFLOW})
    assert messages(p) == [
        "w.yaml:8: Workflow/Flow: bogus: unknown key 'bogus' (valid keys: kind, name, "
        "description, source, processor, services, sinks, attachments_dir)",
        f"w.yaml:9: Workflow/Flow: processor: processor file {p.root}/processors/missing.py "
        "not found".replace(str(p.root) + "/", "")]


def test_the_duplicate_line_is_the_line_assets_shows(project_dir, capsys):
    env = "# Dev settings\n\nkind: Environment\nname: Dev\n"
    root = project_dir({"a.yaml": env, "b.yaml": env})
    assert main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"{root}/b.yaml:4: Environment/Dev: name: duplicate name: Environment/Dev is also " \
           f"defined at {root}/a.yaml:3\n" in err
    assert main(["assets", str(root), "--json"]) == 0
    import json

    (row,) = json.loads(capsys.readouterr().out)
    assert (row["file"], row["line"]) == (f"{root}/a.yaml", 3)


PROMETHEUS = """
groups:
  - name: postline
    rules:
      - alert: PostlineDown
        expr: up{job="postline"} == 0
"""


def test_yaml_without_assets_is_skipped_with_a_note(project_dir, capsys, monkeypatch):
    monkeypatch.setenv("MAIL_PASSWORD", "pw-from-env")
    root = project_dir({"c.yaml": CONN, "s.yaml": SECRETS, "monitoring/alerts.yml": PROMETHEUS})
    assert main(["validate", str(root)]) == 0
    out, err = capsys.readouterr()
    assert err == (f"{root}/monitoring/alerts.yml:1: note: skipped: no document in this file "
                   "has a 'kind', so it holds no assets (add 'kind:' if it should)\n")
    assert out == (f"{root}: valid: 2 asset(s) (1 EmailConnection, 1 Secret), 0 warnings; "
                   "1 YAML file without assets skipped\n")
    assert main(["validate", str(root), "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["valid"] and [n["file"] for n in data["notes"]] == [
        f"{root}/monitoring/alerts.yml"]


def test_a_document_with_a_name_but_no_kind_is_still_an_error(load):
    p = load({"c.yaml": CONN, "s.yaml": SECRETS, "x.yaml": "name: Forgot\nconnection: x\n"})
    (msg,) = messages(p)
    assert msg.startswith("x.yaml:1: kind: missing kind (one of: ")


def test_a_directory_with_only_other_yaml_is_not_a_project(project_dir):
    root = project_dir({"alerts.yml": PROMETHEUS})
    with pytest.raises(ConfigError) as info:
        load_project(root, environ={})
    assert str(info.value) == (f"no assets in {root}: none of its 1 YAML file(s) has a "
                               "document with a 'kind' (is this the project directory?)")


def test_the_repository_root_reports_no_error_for_the_prometheus_rules(capsys):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    main(["validate", str(repo / "examples")])
    err = capsys.readouterr().err
    assert "postline-alerts.yml:1: note: skipped" in err
    assert "missing kind" not in err


def test_a_run_time_prefix_given_as_a_mapping_suggests_its_keys():
    from postline.assets.macros import MacroContext, MacroError, expand

    ctx = MacroContext().with_prefix("mail", {"subject": "Hi", "folder": "INBOX"})
    with pytest.raises(MacroError) as info:
        expand("${mail:subjet}", ctx)
    assert str(info.value) == ("undefined macro ${mail:subjet}: 'mail' has no value 'subjet' "
                               "(did you mean ${mail:subject}?)")
