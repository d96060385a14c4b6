"""Key pairs, sealing and opening, env:/file: values, and editing Secret files in place."""

from __future__ import annotations

import os
import stat

import pytest

from postline.assets import secrets as keys
from postline.assets.secret_edit import set_sealed
from postline.errors import ConfigError, SecretError
from postline.logs import redact
from postline.project import load_project


@pytest.fixture
def keyed(project_dir, tmp_path):
    """A project with a key pair; returns (root, private key file, environ)."""
    root = project_dir({"s.yaml": "kind: Secret\nname: S\nvalues: {}\n"})
    created = keys.create_key_pair(root, key_file=None,
                                   environ={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    return root, created.private_file, {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}


def test_create_key_pair_files_and_modes(keyed, tmp_path):
    root, private, _ = keyed
    pub = keys.read_public_key(root)
    assert private == tmp_path / "cfg" / "postline" / "keys" / f"{keys.key_id(pub)}.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert (root / "postline.pub").read_text().startswith("# postline project public key")


def test_create_refuses_to_overwrite_without_force(keyed):
    root, private, environ = keyed
    with pytest.raises(SecretError, match=r"postline.pub already exists; refusing to replace "
                                          r"it \(pass --force"):
        keys.create_key_pair(root, key_file=None, environ=environ)
    with pytest.raises(SecretError, match="already exists"):
        keys.create_key_pair(root.parent, key_file=private, environ=environ)
    again = keys.create_key_pair(root, key_file=None, environ=environ, force=True)
    assert again.key_id != keys.key_id(b"x")


def test_key_file_choice_order(tmp_path):
    env = {"HOME": "/home/u", "POSTLINE_KEY_FILE": "/k/env.key"}
    assert keys.choose_key_file("id", key_file="/k/arg.key", environ=env) == \
        keys.Path("/k/arg.key")
    assert keys.choose_key_file("id", key_file=None, environ=env) == keys.Path("/k/env.key")
    assert keys.choose_key_file("id", key_file=None, environ={"HOME": "/home/u"}) == \
        keys.Path("/home/u/.config/postline/keys/id.key")


def test_seal_needs_only_the_public_key_and_open_needs_the_private(keyed):
    root, private, environ = keyed
    p = load_project(root, environ={"POSTLINE_KEY_FILE": str(private)})
    sealed = p.seal(b"token cache \x00 bytes")
    assert sealed.startswith("sealed:") and "token" not in sealed
    assert p.open_sealed(sealed) == b"token cache \x00 bytes"
    assert p.open_sealed(sealed[len("sealed:"):]) == b"token cache \x00 bytes"


def project_with_value(root, value: str) -> None:
    (root / "s.yaml").write_text(f"kind: Secret\nname: S\nvalues:\n  pw: '{value}'\n")


def test_secret_decrypts_on_demand_and_is_registered_for_masking(keyed):
    root, private, environ = keyed
    project_with_value(root, keys.seal(keys.read_public_key(root), "pw-Zq8x!"))
    p = load_project(root, environ={**environ})
    assert p.errors == []
    assert p.secret("S.pw") == "pw-Zq8x!"
    assert redact("login with pw-Zq8x! failed") == "login with *** failed"


def test_missing_private_key(keyed, tmp_path):
    root, _, _ = keyed
    project_with_value(root, keys.seal(keys.read_public_key(root), "v"))
    p = load_project(root, environ={"XDG_CONFIG_HOME": str(tmp_path / "elsewhere")})
    assert p.errors == []  # validation does not need the private key
    with pytest.raises(SecretError) as info:
        p.secret("S.pw")
    assert str(info.value).startswith("cannot decrypt secret S.pw: no private key at ")
    # where the key is looked for and how to point at an existing one (issue 13); making a
    # new pair comes last, with its price
    kid = keys.key_id(keys.read_public_key(root))
    assert str(info.value) == (
        f"cannot decrypt secret S.pw: no private key at {tmp_path}/elsewhere/postline/keys/"
        f"{kid}.key (the private key of key id {kid} is looked for there; if it is elsewhere, "
        "export POSTLINE_KEY_FILE=/path/to/the.key; if the key is lost, 'postline keys create "
        "PROJECT --force' makes a new pair and every sealed value must be set again)")


def test_wrong_private_key(keyed, tmp_path):
    root, _, _ = keyed
    project_with_value(root, keys.seal(keys.read_public_key(root), "v"))
    other = tmp_path / "other"
    other.mkdir()
    wrong = keys.create_key_pair(other, key_file=tmp_path / "wrong.key", environ={})
    p = load_project(root, environ={"POSTLINE_KEY_FILE": str(wrong.private_file)})
    with pytest.raises(SecretError, match=r"cannot decrypt secret S.pw: the private key in .*"
                                          r"wrong.key \(key id \w+\) does not belong to this "
                                          r"project"):
        p.secret("S.pw")


def test_value_sealed_to_another_key(keyed, tmp_path):
    root, _, environ = keyed
    other = tmp_path / "o"
    other.mkdir()
    keys.create_key_pair(other, key_file=tmp_path / "o.key", environ={})
    project_with_value(root, keys.seal(keys.read_public_key(other), "v"))
    with pytest.raises(SecretError, match="sealed to a different key or is damaged"):
        load_project(root, environ=environ).secret("S.pw")


def test_env_and_file_values(project_dir, tmp_path):
    (tmp_path / "pw.txt").write_text("from-file\n")
    (tmp_path / "crlf.txt").write_text("two\nlines\r\n")
    root = project_dir({"s.yaml": f"kind: Secret\nname: S\nvalues:\n  a: env:PW\n"
                                  f"  b: file:{tmp_path}/pw.txt\n  c: file:rel.txt\n"
                                  f"  d: file:{tmp_path}/crlf.txt\n  e: file:/nonexistent/x\n"})
    (root / "rel.txt").write_text("relative")
    p = load_project(root, environ={"PW": "from-env"})
    assert [p.secret(f"S.{k}") for k in "abcd"] == ["from-env", "from-file", "relative",
                                                     "two\nlines"]
    with pytest.raises(SecretError, match=r"cannot read secret S.e from /nonexistent/x: No such"):
        p.secret("S.e")
    with pytest.raises(SecretError, match="cannot read secret S.a: environment variable PW is "
                                          "not set"):
        load_project(root, environ={}).secret("S.a")
    with pytest.raises(SecretError, match=r"no secret S.zz \(add it with 'postline secret set"):
        p.secret("S.zz")


def test_malformed_public_key_is_reported(project_dir):
    root = project_dir({"s.yaml": "kind: Secret\nname: S\n", "postline.pub": "not a key\n"})
    (problem,) = load_project(root, environ={}).errors
    assert str(problem).endswith("postline.pub:1: " + str(root / "postline.pub") +
                                 " is not a postline key (expected one base64 line of 32 bytes)")


# -- writing into YAML files -------------------------------------------------------------

ORIGINAL = """\
# Secrets for the mailbox   (a comment that must survive)
---
kind: EmailConnection   # a connection
name: X
incoming:
    protocol: imap
    host: h
---
# the secrets
kind: Secret
name: MailSecrets
description: "quoted"
values:
    # the password
    password: env:PW   # trailing comment
    other: 'single'
# end comment
"""


def test_set_replaces_a_value_and_keeps_every_other_line(tmp_path):
    (tmp_path / "a.yaml").write_text(ORIGINAL)
    written = set_sealed(tmp_path, "MailSecrets", "password", "sealed:AAAA")
    after = (tmp_path / "a.yaml").read_text()
    before_lines, after_lines = ORIGINAL.splitlines(), after.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before_lines, after_lines, strict=False)) if a != b]
    assert changed == [14] and len(before_lines) == len(after_lines)
    assert after_lines[14] == "    password: sealed:AAAA   # trailing comment"
    assert (written.path, written.line, written.created) == (tmp_path / "a.yaml", 15, False)


def test_set_adds_a_key_after_the_last_one_with_the_same_indent(tmp_path):
    (tmp_path / "a.yaml").write_text(ORIGINAL)
    written = set_sealed(tmp_path, "MailSecrets", "token", "sealed:BBBB")
    after = (tmp_path / "a.yaml").read_text().splitlines()
    assert after[:16] == ORIGINAL.splitlines()[:16]
    assert after[16] == "    token: sealed:BBBB" and after[17:] == ORIGINAL.splitlines()[16:]
    assert written.line == 17


def test_set_creates_values_and_assets(tmp_path):
    (tmp_path / "a.yaml").write_text("kind: Secret\nname: E\nvalues: {}  # none yet\n---\n"
                                     "kind: Secret\nname: N\ndescription: |\n  multi\n  line\n")
    set_sealed(tmp_path, "E", "k", "sealed:E")
    set_sealed(tmp_path, "N", "k", "sealed:N")
    assert (tmp_path / "a.yaml").read_text() == (
        "kind: Secret\nname: E\nvalues:  # none yet\n  k: sealed:E\n---\n"
        "kind: Secret\nname: N\ndescription: |\n  multi\n  line\nvalues:\n  k: sealed:N\n")
    created = set_sealed(tmp_path, "New", "k", "sealed:C")
    assert created.created and created.path == tmp_path / "secrets.yaml"
    set_sealed(tmp_path, "Newer", "k", "sealed:D")
    p = load_project(tmp_path, environ={})
    assert {s.name: s.values for s in p.assets("Secret")} == {
        "E": {"k": "sealed:E"}, "N": {"k": "sealed:N"}, "New": {"k": "sealed:C"},
        "Newer": {"k": "sealed:D"}}


def test_set_refuses_flow_style_and_bad_names(tmp_path):
    (tmp_path / "a.yaml").write_text("kind: Secret\nname: F\nvalues: {a: env:A}\n")
    with pytest.raises(ConfigError, match="values is written in flow style"):
        set_sealed(tmp_path, "F", "b", "sealed:x")
    with pytest.raises(ConfigError, match="invalid secret key 'a b'"):
        set_sealed(tmp_path, "F", "a b", "sealed:x")
    with pytest.raises(ConfigError, match="invalid asset name"):
        set_sealed(tmp_path, "F G", "a", "sealed:x")
    assert (tmp_path / "a.yaml").read_text() == "kind: Secret\nname: F\nvalues: {a: env:A}\n"


def test_set_keeps_the_file_mode(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("kind: Secret\nname: S\nvalues:\n  a: env:A\n")
    os.chmod(path, 0o640)
    set_sealed(tmp_path, "S", "a", "sealed:x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
