"""Secrets that cannot be read: wrong or missing private key, unset env:, missing file:.

Each failure names the secret and the fix in one line; the value never appears.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from failhelpers import cli


def seal_password(p, key_file: Path) -> None:
    """Give project ``p`` a key pair and the user's password sealed into MailSecrets."""
    res = cli("keys", "create", str(p.root), "--key-file", str(key_file))
    assert res.code == 0, res.err
    res = cli("secret", "set", str(p.root), "MailSecrets", "password", stdin=p.user.password,
              env={"POSTLINE_KEY_FILE": str(key_file)})
    assert res.code == 0, res.err
    assert p.user.password not in (p.root / "secrets.yaml").read_text()


def _kid(root: Path) -> str:
    from postline.assets import secrets as keys

    return keys.key_id(keys.read_public_key(root))


@pytest.fixture
def sealed(stack_project, tmp_path):
    p = stack_project()
    seal_password(p, tmp_path / "keys" / "right.key")
    p.env["POSTLINE_KEY_FILE"] = str(tmp_path / "keys" / "right.key")
    return p


def test_sealed_password_works(sealed):
    res = sealed.cli("test-connection", ".", "Mail", "--direction", "incoming")
    assert res.code == 0, res.out + res.err


def test_missing_private_key_file(sealed, tmp_path):
    missing = tmp_path / "nowhere.key"
    env = {"POSTLINE_KEY_FILE": str(missing)}
    tc = sealed.cli("test-connection", ".", "Mail", "--direction", "incoming", env=env)
    assert tc.code == 1
    tc.assert_clean(sealed.user.password)
    assert f"cannot decrypt secret MailSecrets.password: no private key at {missing}" in tc.out
    run = sealed.cli("run", ".", "--once", "-vv", env=env)
    assert run.code == 1
    run.assert_clean(sealed.user.password)
    assert run.error == (f"postline: error: workflow W: cannot decrypt secret "
                         f"MailSecrets.password: no private key at {missing} "
                         "(POSTLINE_KEY_FILE points there; point it at the file holding the "
                         f"private key of key id {_kid(sealed.root)}; if the key is lost, "
                         "'postline keys create PROJECT --force' makes a new pair and every "
                         "sealed value must be set again)")


def test_private_key_of_another_project(sealed, tmp_path):
    other = tmp_path / "other-project"
    other.mkdir()
    other_key = tmp_path / "keys" / "other.key"
    assert cli("keys", "create", str(other), "--key-file", str(other_key)).code == 0
    env = {"POSTLINE_KEY_FILE": str(other_key)}
    run = sealed.cli("run", ".", "--once", "-vv", env=env)
    assert run.code == 1
    run.assert_clean(sealed.user.password)
    assert run.error.startswith(f"postline: error: workflow W: cannot decrypt secret "
                                f"MailSecrets.password: the private key in {other_key} "
                                "(key id "), run.err
    assert "does not belong to this project" in run.error


def test_send_with_a_secret_that_cannot_be_read(sealed, tmp_path):
    res = sealed.cli("send", ".", "Out", "--message", "-", stdin=sealed.message(),
                     env={"POSTLINE_KEY_FILE": str(tmp_path / "nowhere.key")})
    assert res.code == 1
    res.assert_clean(sealed.user.password)
    assert res.error.startswith("postline: error: cannot decrypt secret MailSecrets.password")


def test_send_with_a_secret_that_cannot_be_read_fails_loudly(sealed, tmp_path):
    """Whatever the wording, it must fail with exit 1 and one error line, never send."""
    res = sealed.cli("send", ".", "Out", "--message", "-", stdin=sealed.message(),
                     env={"POSTLINE_KEY_FILE": str(tmp_path / "nowhere.key")})
    assert res.code == 1
    assert sealed.user.password not in res.out + res.err
    assert "cannot decrypt secret MailSecrets.password" in res.error


def test_private_key_readable_by_others_warns_but_works(sealed, tmp_path):
    key = tmp_path / "keys" / "right.key"
    os.chmod(key, 0o644)
    res = sealed.cli("test-connection", ".", "Mail", "--direction", "incoming")
    assert res.code == 0, res.out
    assert f"private key {key} is readable by others (mode 644); chmod 600 it" in res.err


def test_env_variable_unset_at_run_time(stack_project):
    p = stack_project()
    del p.env["QA_MAIL_PASSWORD"]
    val = p.cli("validate", ".")
    assert val.code == 0
    assert "environment variable QA_MAIL_PASSWORD is not set here" in val.err
    run = p.cli("run", ".", "--once")
    assert run.code == 1
    run.assert_clean()
    assert run.error == ("postline: error: workflow W: cannot read secret MailSecrets.password: "
                         "environment variable QA_MAIL_PASSWORD is not set")
    send = p.cli("send", ".", "Out", "--message", "-", stdin=p.message())
    assert send.code == 1
    assert "environment variable QA_MAIL_PASSWORD is not set" in send.error


def test_file_secret_missing(stack_project, tmp_path):
    p = stack_project()
    missing = tmp_path / "run" / "secrets" / "mail"
    (p.root / "secrets.yaml").write_text(
        f"kind: Secret\nname: MailSecrets\nvalues:\n  password: file:{missing}\n")
    run = p.cli("run", ".", "--once")
    assert run.code == 1
    run.assert_clean()
    assert run.error == (f"postline: error: workflow W: cannot read secret "
                         f"MailSecrets.password from {missing}: No such file or directory")


# -- postline secret set ------------------------------------------------------------------

def project_with_key(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "p"
    root.mkdir()
    (root / "secrets.yaml").write_text("kind: Secret\nname: MailSecrets\nvalues:\n"
                                       "  password: env:QA_PW   # keep this comment\n")
    key = tmp_path / "k.key"
    assert cli("keys", "create", str(root), "--key-file", str(key)).code == 0
    return root, key


def test_secret_set_for_a_misspelt_asset_is_refused(tmp_path):
    root, _ = project_with_key(tmp_path)
    before = (root / "secrets.yaml").read_text()
    res = cli("secret", "set", str(root), "MailSecret", "password", stdin="s3cret-value")
    assert res.code == 1
    res.assert_clean("s3cret-value")
    assert res.error == (f"postline: error: no Secret asset named 'MailSecret' in {root} (did "
                         "you mean 'MailSecrets'?); nothing was stored (pass --create to add "
                         "a new Secret asset 'MailSecret')")
    assert (root / "secrets.yaml").read_text() == before


def test_secret_set_for_a_misspelt_key_is_refused(tmp_path):
    root, _ = project_with_key(tmp_path)
    res = cli("secret", "set", str(root), "MailSecrets", "pasword", stdin="s3cret-value")
    assert res.code == 1
    assert res.error == ("postline: error: Secret 'MailSecrets' has no key 'pasword' (did you "
                         "mean 'password'?); nothing was stored (pass --create to add the new "
                         "key 'pasword')")


def test_secret_set_creates_a_new_asset_when_asked(tmp_path):
    root, _ = project_with_key(tmp_path)
    res = cli("secret", "set", str(root), "MailSecret", "password", "--create",
              stdin="s3cret-value")
    assert res.code == 0, res.err
    assert "created Secret asset" in res.out
    text = (root / "secrets.yaml").read_text()
    assert "name: MailSecret\n" in text and "s3cret-value" not in text
    assert "# keep this comment" in text


def test_secret_set_with_empty_stdin(tmp_path):
    root, _ = project_with_key(tmp_path)
    before = (root / "secrets.yaml").read_text()
    for stdin in ("", "\n"):
        res = cli("secret", "set", str(root), "MailSecrets", "password", stdin=stdin)
        assert res.code == 1
        assert res.error == ("postline: error: empty value for MailSecrets.password; nothing "
                             "was stored")
    assert (root / "secrets.yaml").read_text() == before


def test_secret_set_without_a_public_key(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    res = cli("secret", "set", str(root), "S", "k", stdin="v4lue-xyz")
    assert res.code == 1
    assert res.error == (f"postline: error: {root} has no public key (postline.pub) (run "
                         f"'postline keys create {root}' first)")
