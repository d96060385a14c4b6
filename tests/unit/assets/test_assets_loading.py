"""Finding files, reading YAML documents, kinds, names and duplicates."""

from __future__ import annotations

import pytest
from asset_helpers import CONN, SECRETS, messages

from postline.errors import ConfigError, ValidationFailed
from postline.project import load_project, open_project


def test_multi_document_files_recursive_dirs_and_yml(load):
    p = load({"a.yaml": CONN + "---\n" + SECRETS,
              "sub/deeper/env.yml": "kind: Environment\nname: Dev\nvariables: {A: b}\n"},
             environ={"MAIL_PASSWORD": "x"})
    assert p.errors == []
    assert [(e.kind, e.name) for e in p.entries()] == [
        ("EmailConnection", "Mailbox"), ("Secret", "MailSecrets"), ("Environment", "Dev")]
    assert p.entry("Secret", "MailSecrets").doc.line == 12


def test_hidden_dirs_and_state_dir_are_skipped(load):
    broken = "kind: [unclosed\n"
    p = load({"a.yaml": CONN + "---\n" + SECRETS, ".git/x.yaml": broken,
              ".postline-state/ledger.yaml": broken, ".hidden.yaml": broken})
    assert p.errors == []


def test_custom_state_dir_inside_project_is_skipped(project_dir):
    root = project_dir({"a.yaml": CONN + "---\n" + SECRETS, "state/x.yaml": "kind: [\n"})
    p = load_project(root, environ={"POSTLINE_STATE_DIR": str(root / "state")})
    assert p.errors == [] and p.state_dir == root / "state"


def test_default_state_dir(project_dir):
    root = project_dir({"a.yaml": CONN + "---\n" + SECRETS})
    assert load_project(root, environ={}).state_dir == root.resolve() / ".postline-state"


def test_syntax_error_names_file_and_line_and_other_files_still_load(load):
    p = load({"a.yaml": CONN + "---\n" + SECRETS, "b.yaml": "kind: Secret\nname: X\n  bad: [\n"})
    assert messages(p) == ["b.yaml:3: YAML syntax error: mapping values are not allowed here"]
    assert len(p.entries()) == 2


def test_duplicate_key_names_key_and_never_values(load):
    p = load({"a.yaml": "kind: Secret\nname: S\nvalues:\n  a: env:X\n  a: env:Y\n"})
    assert messages(p) == [
        "a.yaml:5: duplicate key 'a' (first at line 4); each key may appear once"]


def test_document_must_be_a_mapping(load):
    # (the file has an asset too: a file with no document that has a kind or a name is
    # skipped as other YAML, see test_yaml_without_assets_is_skipped_with_a_note)
    p = load({"a.yaml": "kind: Environment\nname: E\n---\n- just\n- a list\n"})
    assert messages(p) == ["a.yaml:4: a document must be a mapping with kind and name "
                           "(one asset per document)"]


def test_missing_kind_lists_known_kinds(load):
    p = load({"a.yaml": "name: x\n"})
    (msg,) = messages(p)
    assert msg.startswith("a.yaml:1: kind: missing kind (one of: ")
    assert "EmailConnection" in msg and "Secret" in msg


def test_unknown_kind_suggests_and_lists(load):
    p = load({"a.yaml": "kind: EmailConection\nname: x\n"})
    (msg,) = messages(p)
    assert msg.startswith("a.yaml:1: EmailConection/x: kind: unknown kind 'EmailConection' "
                          "(did you mean 'EmailConnection'?); known kinds: ")


def test_missing_and_invalid_names(load):
    p = load({"a.yaml": "kind: Environment\n---\nkind: Environment\nname: has space\n"})
    assert messages(p) == [
        "a.yaml:1: Environment/?: name: missing name (letters, digits, '_', '-', '.')",
        "a.yaml:4: Environment/has space: name: invalid name 'has space': use letters, "
        "digits, '_', '-' and '.' (no spaces)"]


def test_duplicate_names_per_kind_name_both_places(load):
    env = "kind: Environment\nname: Dev\n"
    p = load({"a.yaml": env, "b/c.yaml": env, "d.yaml": "kind: Secret\nname: Dev\n"})
    assert messages(p) == ["b/c.yaml:2: Environment/Dev: name: duplicate name: Environment/Dev "
                           f"is also defined at {p.root}/a.yaml:1".replace(str(p.root) + "/", "")]


def test_not_a_directory_and_empty_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_project(tmp_path / "nope", environ={})
    with pytest.raises(ConfigError, match=r"no asset files \(\*.yaml, \*.yml\) in"):
        load_project(tmp_path, environ={})


def test_open_project_raises_with_every_problem(project_dir):
    root = project_dir({"a.yaml": "kind: Nope\nname: a\n---\nkind: Environment\nname: b c\n"})
    with pytest.raises(ValidationFailed) as info:
        open_project(root, environ={})
    assert len(info.value.problems) == 2
    assert str(info.value) == "project has 2 error(s)"


def test_file_paths_are_shown_as_the_user_gave_them(project_dir, monkeypatch):
    root = project_dir({"a.yaml": "kind: Nope\nname: a\n"})
    monkeypatch.chdir(root.parent)
    p = load_project(root.name, environ={})
    assert str(p.problems[0]).startswith(f"{root.name}/a.yaml:1:")


def test_yaml_scalars_become_text_in_environment(load):
    p = load({"a.yaml": "kind: Environment\nname: E\nvariables:\n  PORT: 993\n  ON: true\n"
                        "  DAY: 2024-01-02\n"})
    assert p.get("Environment", "E").variables == {"PORT": "993", "ON": "true",
                                                   "DAY": "2024-01-02"}
