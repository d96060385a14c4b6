"""Bad project configuration: every mistake is one line naming file:line, asset and field.

No server is needed: ``validate`` (and ``run``, which validates first) stop before any I/O.
"""

from __future__ import annotations

import socket

import pytest
from failhelpers import cli, write_project

CONN = """
kind: EmailConnection
name: Mail
incoming: {protocol: imap, host: 127.0.0.1, user: u@example.test, credential: {type: none}}
"""


def validate(root, *extra: str, env: dict | None = None):
    return cli("validate", str(root), *extra, env=env)


def only_error(res) -> str:
    """The single problem line of a failed validation (the summary line aside)."""
    assert res.code == 1, res.err
    res.assert_clean()
    problems = [line for line in res.lines if not line.startswith("postline: ")]
    assert len(problems) == 1, res.err
    assert res.lines[-1].startswith("postline: "), res.err
    return problems[0]


def test_unknown_key_suggests_the_nearest(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN.replace("host:", "hots:")})
    assert only_error(validate(root)) == (
        f"{root}/c.yaml:3: EmailConnection/Mail: incoming.hots: unknown key 'hots' "
        "(did you mean 'host'?)")


def test_wrong_types_each_named(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": """
        kind: EmailConnection
        name: Mail
        incoming:
          host: h
          port: abc
          connect_timeout: [1]
          check_server_identity: maybe
        """})
    res = validate(root)
    assert res.code == 1
    res.assert_clean()
    assert f"{root}/c.yaml:5: EmailConnection/Mail: incoming.port: expected an integer, " \
           "got 'abc'" in res.lines
    assert any(line.startswith(f"{root}/c.yaml:6: EmailConnection/Mail: "
                               "incoming.connect_timeout: ") for line in res.lines)
    assert any(line.startswith(f"{root}/c.yaml:7: EmailConnection/Mail: "
                               "incoming.check_server_identity: ") for line in res.lines)
    assert res.lines[-1] == f"postline: {root}: 3 error(s), 0 warnings"


def test_undefined_macro_names_the_variable_and_the_fix(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN.replace("127.0.0.1",
                                                                 "'${env:QA_NOT_SET}'")})
    assert only_error(validate(root)) == (
        f"{root}/c.yaml:3: EmailConnection/Mail: incoming.host: undefined macro "
        "${env:QA_NOT_SET}: environment variable QA_NOT_SET is not set "
        "(give a default with ${env:QA_NOT_SET:-value})")


def test_unterminated_macro(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN.replace("127.0.0.1", "'${env:A'")})
    line = only_error(validate(root))
    assert line.startswith(f"{root}/c.yaml:3: EmailConnection/Mail: incoming.host: "
                           "unterminated macro '${env:A' (missing '}'")


def test_missing_referenced_asset_suggests_the_nearest(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN, "s.yaml": """
        kind: EmailSource
        name: In
        connection: Mial
        """})
    assert only_error(validate(root)) == (
        f"{root}/s.yaml:3: EmailSource/In: connection: no EmailConnection named 'Mial' "
        "(did you mean 'Mail'?)")


def test_secret_key_that_does_not_exist(tmp_path):
    root = write_project(tmp_path / "p", {
        "c.yaml": CONN.replace("{type: none}", "{type: secret, secret: S.pasword}"),
        "s.yaml": "kind: Secret\nname: S\nvalues:\n  password: env:QA_PW\n"})
    assert only_error(validate(root, env={"QA_PW": "x"})) == (
        f"{root}/c.yaml:3: EmailConnection/Mail: incoming.credential.secret: Secret 'S' has "
        "no key 'pasword' (did you mean 'password'?); set it with 'postline secret set "
        "PROJECT S pasword'")


@pytest.mark.parametrize("text, line, words", [
    ("kind: EmailConnection\nname: Mail\nincoming:\n  host: x\n   port: 3\n", 5,
     "YAML syntax error: mapping values are not allowed here"),
    ("kind: Environment\nname: [E\n", 3, "YAML syntax error: expected ',' or ']'"),
    ("kind: Environment\nname: E\nname: F\n", 3, "duplicate key 'name' (first at line 2)"),
])
def test_yaml_syntax_errors_name_file_and_line(tmp_path, text, line, words):
    root = write_project(tmp_path / "p", {"bad.yaml": text})
    for command in ("validate", "run"):
        res = cli(command, str(root), "--once") if command == "run" else validate(root)
        assert res.code == 1
        res.assert_clean()
        assert res.lines[0].startswith(f"{root}/bad.yaml:{line}: {words}"), res.err


def test_non_utf8_file_names_the_line(tmp_path):
    root = write_project(tmp_path / "p", {
        "latin1.yaml": "kind: Environment\nname: E\nvariables: {A: 'M\xfcller'}\n".encode(
            "latin-1")})
    assert only_error(validate(root)) == (
        f"{root}/latin1.yaml:3: not UTF-8 text (byte 0xfc at column 18); save the file as UTF-8")


def test_empty_project_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    for argv in (["validate"], ["run", "--once"], ["assets"]):
        res = cli(argv[0], str(tmp_path / "empty"), *argv[1:])
        assert res.code == 1
        res.assert_clean()
        assert res.lines == [f"postline: error: no asset files (*.yaml, *.yml) in "
                             f"{tmp_path / 'empty'} (is this the project directory?)"]


def test_project_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope"
    for argv in (["validate"], ["run", "--once"], ["test-connection", "X"], ["secret", "list"]):
        res = cli(argv[0], *([] if argv[0] != "secret" else argv[1:]), str(missing),
                  *(argv[1:] if argv[0] != "secret" else []))
        assert res.code == 1, argv
        res.assert_clean()
        assert res.error.startswith(f"postline: error: project directory {missing} does not "
                                    "exist"), res.err


def test_duplicate_names(tmp_path):
    env = "kind: Environment\nname: E\nvariables: {}\n"
    root = write_project(tmp_path / "p", {"a.yaml": env, "b.yaml": env})
    assert only_error(validate(root)) == (
        f"{root}/b.yaml:2: Environment/E: name: duplicate name: Environment/E is also defined "
        f"at {root}/a.yaml:1")    # where `postline assets` locates it (issue 13)


def test_missing_ca_file_is_a_warning_naming_the_field(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN.replace(
        "user:", "ca_file: certs/ca.pem, user:")})
    res = validate(root)
    assert res.code == 0
    assert res.lines == [
        f"{root}/c.yaml:3: warning: EmailConnection/Mail: incoming.ca_file: ca_file "
        f"{root}/certs/ca.pem not found here; connecting will fail unless it exists on the "
        "host that runs postline (a relative path is relative to the project directory)"]


def test_missing_ca_file_at_connect_says_not_found(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:  # TCP works, TLS never starts
        port = listener.getsockname()[1]
        root = write_project(tmp_path / "p", {"c.yaml": CONN.replace(
            "user:", f"ca_file: certs/ca.pem, port: {port}, connect_timeout: 2, user:")})
        res = cli("test-connection", str(root), "Mail")
    assert res.code == 1
    res.assert_clean()
    assert "  ✗ tls " in res.out
    assert f"ms  ca_file {root}/certs/ca.pem not found\n" in res.out
    assert "  fix: fix the path in the connection's ca_file; a relative path is relative to " \
           "the project directory\n" in res.out


def test_unknown_service_in_workflow(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN, "w.yaml": """
        kind: EmailSource
        name: In
        connection: Mail
        ---
        kind: EmailService
        name: Notify
        connection: Mail
        ---
        kind: Workflow
        name: W
        source: In
        services: {Alerts: Notfy}
        sinks: [{type: stdout}]
        """})
    res = validate(root)
    problems = [line for line in res.lines if not line.startswith("postline: ")]
    assert res.code == 1
    assert problems[0].startswith(f"{root}/w.yaml:12: Workflow/W: services.Alerts: no "
                                  "EmailService named 'Notfy' (did you mean 'Notify'?)")


WORKFLOW = CONN + """
---
kind: EmailSource
name: In
connection: Mail
---
kind: Workflow
name: W
source: In
processor: proc.py
sinks: [{type: stdout}]
"""


def test_processor_that_does_not_exist_at_run(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": WORKFLOW})
    res = cli("run", str(root), "--once")
    assert res.code == 1
    res.assert_clean()
    assert res.lines[0] == (f"{root}/c.yaml:13: Workflow/W: processor: processor file "
                            f"{root}/proc.py not found")
    assert res.lines[-1] == "postline: project has 1 error(s)"


def test_processor_with_a_syntax_error_at_run(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": WORKFLOW,
                                          "proc.py": "def on_message(m, ctx:\n"})
    res = cli("run", str(root), "--once")
    assert res.code == 1
    res.assert_clean()
    assert res.lines[0].startswith(f"{root}/c.yaml:13: Workflow/W: processor: {root}/proc.py:1: "
                                   "syntax error in the processor: ")
    assert res.lines[-1] == "postline: project has 1 error(s)"


def test_validate_reports_a_missing_processor(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": WORKFLOW})
    res = validate(root)
    assert res.code == 1
    assert any(line.startswith(f"{root}/c.yaml:") and "processor" in line
               and "proc.py" in line for line in res.lines), res.err


def test_a_yaml_file_given_as_the_project(tmp_path):
    root = write_project(tmp_path / "p", {"c.yaml": CONN})
    res = validate(root / "c.yaml")
    assert res.code == 1
    assert res.error == (f"postline: error: {root}/c.yaml is a file, not a project directory "
                         f"(pass the directory that holds the asset YAML files, e.g. {root})")
