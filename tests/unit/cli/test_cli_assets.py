"""``postline validate | assets | show | usage | keys create | secret set|list``.

Called through ``postline.cli.main`` as a user would; asserts on exit codes and output.
"""

from __future__ import annotations

import io
import json
import shutil
import stat
import textwrap
from pathlib import Path

import pytest

from postline.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PLAINTEXT = "Pl41n-S3cret-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("POSTLINE_KEY_FILE", "POSTLINE_STATE_DIR", "POSTLINE_DEMO_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    # examples/local trusts the dev stack's CA; a missing ca_file is a warning of its own
    ca = tmp_path / "stack-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("POSTLINE_STACK_CA_FILE", str(ca))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return root


@pytest.fixture
def local(tmp_path) -> Path:
    """A copy of examples/local."""
    return Path(shutil.copytree(EXAMPLES / "local", tmp_path / "local"))


# -- validate ----------------------------------------------------------------------------

def test_validate_example_projects(capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    monkeypatch.setenv("POSTLINE_DEMO_PASSWORD", "alice-pass")
    code, out, err = run(capsys, "validate", "examples/local")
    assert (code, err) == (0, "")
    assert out == ("examples/local: valid: 7 asset(s) (2 EmailConnection, 1 EmailService, "
                   "1 EmailSource, 1 Environment, 1 Secret, 1 Workflow), 0 warnings\n")
    code, out, err = run(capsys, "validate", "examples/reference")
    assert code == 0, err
    assert "valid:" in out


def test_validate_warns_but_passes_when_the_demo_password_is_not_set(capsys, local):
    code, out, err = run(capsys, "validate", str(local))
    assert code == 0 and out.endswith(", 1 warning\n")
    assert err == (f"{local}/secrets.yaml:14: warning: Secret/DemoSecrets: values.password: "
                   "environment variable POSTLINE_DEMO_PASSWORD is not set here; it is read at "
                   "run time by EmailConnection/LocalMail, EmailConnection/LocalPop3\n")


def test_validate_lists_every_error_on_stderr(capsys, tmp_path, monkeypatch):
    write(tmp_path / "bad", {"c.yaml": """
        kind: EmailConnection
        name: Mailbox
        incoming:
          hots: imap.example.com
          port: abc
        ---
        kind: Secrett
        name: S
        """})
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "validate", "bad")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "bad/c.yaml:4: EmailConnection/Mailbox: incoming.hots: unknown key 'hots' "
        "(did you mean 'host'?)",
        "bad/c.yaml:5: EmailConnection/Mailbox: incoming.port: expected an integer, got 'abc'",
        "bad/c.yaml:7: Secrett/S: kind: unknown kind 'Secrett' (did you mean 'Secret'?); known "
        "kinds: " + err.split("known kinds: ")[1].splitlines()[0],
        "postline: bad: 3 error(s), 0 warnings"]


def test_validate_json(capsys, tmp_path):
    write(tmp_path / "p", {"c.yaml": "kind: Environment\nname: a b\n"})
    code, out, _ = run(capsys, "validate", str(tmp_path / "p"), "--json")
    data = json.loads(out)
    assert code == 1 and data["valid"] is False and data["errors"][0]["line"] == 2
    assert data["errors"][0]["field"] == "name"


def test_validate_defaults_to_the_current_directory(capsys, tmp_path, monkeypatch):
    write(tmp_path, {"e.yaml": "kind: Environment\nname: E\n"})
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "validate")[1] == ".: valid: 1 asset(s) (1 Environment), 0 warnings\n"


def test_validate_missing_project(capsys, tmp_path):
    code, out, err = run(capsys, "validate", str(tmp_path / "nope"))
    assert code == 1 and err.startswith("postline: error: project directory ")
    assert len(err.splitlines()) == 1


# -- assets, show, usage ------------------------------------------------------------------

def test_assets_table_and_json(capsys, local):
    code, out, _ = run(capsys, "assets", str(local))
    assert code == 0
    assert "LocalMail" in out and "connection.yaml:6" in out and "DemoSecrets" in out
    code, out, _ = run(capsys, "assets", str(local), "--json")
    rows = json.loads(out)
    assert {(r["kind"], r["name"], r["used_by"]) for r in rows} >= {
        ("Secret", "DemoSecrets", 2), ("Environment", "LocalStack", 2)}


def test_show_resolves_macros_and_explains_defaults(capsys, local, monkeypatch):
    monkeypatch.setenv("POSTLINE_STACK_IMAPS_PORT", "20993")
    code, out, _ = run(capsys, "show", str(local), "LocalMail")
    assert code == 0
    assert out.startswith(f"# EmailConnection/LocalMail ({local}/connection.yaml:6)\n")
    lines = out.splitlines()
    assert "  port: 20993" in lines and "  host: 127.0.0.1" in lines
    assert "  check_server_identity: true (default)" in lines
    assert "    secret: DemoSecrets.password (env:POSTLINE_DEMO_PASSWORD)" in lines


def test_show_default_port(capsys, tmp_path):
    write(tmp_path, {"c.yaml": "kind: EmailConnection\nname: C\noutgoing: {host: h, "
                               "security: tls}\n"})
    out = run(capsys, "show", str(tmp_path), "C")[1]
    assert "  port: 465 (default for smtp + tls)" in out.splitlines()
    data = json.loads(run(capsys, "show", str(tmp_path), "C", "--json")[1])
    assert data["asset"]["outgoing"]["port"] == 465
    assert data["notes"]["outgoing.port"] == "default for smtp + tls"


def test_show_masks_values_from_secrets(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("THE_USER", PLAINTEXT)
    write(tmp_path, {"c.yaml": "kind: EmailConnection\nname: C\nincoming:\n  host: h\n"
                               "  user: ${sec:S.user}\n",
                     "s.yaml": "kind: Secret\nname: S\nvalues: {user: env:THE_USER}\n"})
    code, out, _ = run(capsys, "show", str(tmp_path), "C")
    assert code == 0 and "  user: *** (secret)" in out.splitlines() and PLAINTEXT not in out


def test_show_unknown_and_invalid_assets(capsys, tmp_path):
    write(tmp_path, {"c.yaml": "kind: EmailConnection\nname: Conn\nincoming: {port: x}\n"})
    code, _, err = run(capsys, "show", str(tmp_path), "Con")
    assert code == 1 and "no asset named 'Con'" in err and "did you mean 'Conn'" in err
    code, _, err = run(capsys, "show", str(tmp_path), "Conn")
    assert code == 1 and err.splitlines()[-1] == "postline: EmailConnection/Conn is invalid"


def test_usage_text_and_json(capsys, local):
    code, out, _ = run(capsys, "usage", str(local), "DemoSecrets")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Secret/DemoSecrets is used by 2 asset(s):"
    assert lines[1].startswith("  EmailConnection/LocalMail  incoming.credential.secret -> "
                               "DemoSecrets.password  (")
    data = json.loads(run(capsys, "usage", str(local), "LocalStack", "--json")[1])
    assert data["count"] == 2 and data["used_by"] == ["EmailConnection/LocalMail",
                                                      "EmailConnection/LocalPop3"]
    usage_lines = run(capsys, "usage", str(local), "LocalMail")[1].splitlines()
    assert usage_lines[0] == "EmailConnection/LocalMail is used by 2 asset(s):"
    assert usage_lines[1].startswith("  EmailService/Notify  connection  (")
    assert run(capsys, "usage", str(local), "LocalPop3")[1] == \
        "EmailConnection/LocalPop3 is not used by any asset\n"


@pytest.mark.parametrize("argv", [["validate"], ["assets"], ["show"], ["usage"],
                                  ["keys", "create"], ["secret", "set"], ["secret", "list"]])
def test_every_command_help_has_an_example(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Examples:\n  postline " + argv[0] in out


# -- keys and secrets ---------------------------------------------------------------------

def test_keys_create_then_secret_set_from_stdin_then_use(capsys, local, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "keys", "create", str(local))
    assert code == 0 and out.startswith("created key pair ")
    key_file = next((tmp_path / "config" / "postline" / "keys").glob("*.key"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    code, _, err = run(capsys, "keys", "create", str(local))
    assert code == 1 and "already exists; refusing to replace it (pass --force" in err

    before = (local / "secrets.yaml").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO(PLAINTEXT + "\n"))
    code, out, err = run(capsys, "secret", "set", str(local), "DemoSecrets", "password")
    assert code == 0 and out.startswith(f"sealed DemoSecrets.password into {local}/secrets.yaml:14")
    after = (local / "secrets.yaml").read_text()
    assert [a for a, b in zip(before.splitlines(), after.splitlines(), strict=False) if a != b] == [
        "  password: env:POSTLINE_DEMO_PASSWORD"]
    assert PLAINTEXT not in after and PLAINTEXT not in out + err

    from postline.project import open_project
    assert open_project(local).secret("DemoSecrets.password") == PLAINTEXT


def test_secret_set_prompts_twice_without_echo(capsys, local, monkeypatch):
    run(capsys, "keys", "create", str(local))
    answers = iter([PLAINTEXT, PLAINTEXT])
    prompts = []

    class TTY(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr("sys.stdin", TTY())
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or next(answers))
    code, out, err = run(capsys, "secret", "set", str(local), "Other", "token")
    assert code == 0 and prompts == ["value for Other.token: ", "again: "]
    assert PLAINTEXT not in out + err
    assert "Other" in (local / "secrets.yaml").read_text()

    answers = iter(["one", "two"])
    code, _, err = run(capsys, "secret", "set", str(local), "Other", "token")
    assert code == 1 and err == "postline: error: the two values differ; nothing was stored\n"


def test_secret_set_without_public_key_or_value(capsys, local, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("x"))
    code, _, err = run(capsys, "secret", "set", str(local), "DemoSecrets", "password")
    assert code == 1 and err == (f"postline: error: {local} has no public key (postline.pub) "
                                 f"(run 'postline keys create {local}' first)\n")
    run(capsys, "keys", "create", str(local))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = run(capsys, "secret", "set", str(local), "DemoSecrets", "password")
    assert code == 1 and "empty value for DemoSecrets.password" in err


def test_secret_value_is_never_taken_from_argv(capsys, local):
    with pytest.raises(SystemExit):
        main(["secret", "set", str(local), "DemoSecrets", "password", PLAINTEXT])
    assert PLAINTEXT not in capsys.readouterr().out


def test_secret_list_shows_keys_and_sources_never_values(capsys, local, monkeypatch):
    run(capsys, "keys", "create", str(local))
    monkeypatch.setattr("sys.stdin", io.StringIO(PLAINTEXT))
    run(capsys, "secret", "set", str(local), "DemoSecrets", "token")
    (local / "more.yaml").write_text(f"kind: Secret\nname: Bad\nvalues: {{p: {PLAINTEXT}}}\n")
    code, out, _ = run(capsys, "secret", "list", str(local), "--json")
    rows = json.loads(out)
    assert code == 0
    assert [(r["asset"], r["key"], r["source"]) for r in rows] == [
        ("Bad", "p", "invalid"), ("DemoSecrets", "password", "env"),
        ("DemoSecrets", "token", "sealed")]
    code, out, _ = run(capsys, "secret", "list", str(local))
    assert "env:POSTLINE_DEMO_PASSWORD" in out and "sealed" in out
    assert PLAINTEXT not in out and "sealed:" not in out


def test_keys_create_with_key_file_flag_and_env(capsys, local, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "keys", "create", str(local), "--key-file",
                       str(tmp_path / "flag.key"))
    assert code == 0 and (tmp_path / "flag.key").exists()
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "env.key"))
    run(capsys, "keys", "create", str(local), "--force")
    assert (tmp_path / "env.key").exists()


def test_no_secret_value_in_any_output(capsys, local, monkeypatch):
    """Set a secret, use it via a macro and a credential; no command prints it."""
    run(capsys, "keys", "create", str(local))
    monkeypatch.setattr("sys.stdin", io.StringIO(PLAINTEXT))
    run(capsys, "secret", "set", str(local), "DemoSecrets", "password")
    monkeypatch.setenv("POSTLINE_DEMO_USER_SECRET", PLAINTEXT)
    text = (local / "secrets.yaml").read_text() + "  user: env:POSTLINE_DEMO_USER_SECRET\n"
    (local / "secrets.yaml").write_text(text)
    conn = (local / "connection.yaml").read_text().replace(
        "description: Mailbox of ${env:DEMO_USER:-alice@example.test}",
        "description: Mailbox of ${sec:DemoSecrets.user}", 1)
    (local / "connection.yaml").write_text(conn.replace(
        "  user: ${env:DEMO_USER:-alice@example.test}", "  user: ${sec:DemoSecrets.password}", 1))
    outputs = []
    for argv in (["validate", str(local)], ["validate", str(local), "--json"],
                 ["assets", str(local)], ["assets", str(local), "--json"],
                 ["show", str(local), "LocalMail"], ["show", str(local), "LocalMail", "--json"],
                 ["usage", str(local), "DemoSecrets"], ["secret", "list", str(local)],
                 ["secret", "list", str(local), "--json"]):
        code, out, err = run(capsys, *argv)
        assert code == 0, (argv, err)
        outputs.append(out + err)
    assert all(PLAINTEXT not in o for o in outputs)
    assert "  user: *** (secret)" in outputs[4].splitlines()
