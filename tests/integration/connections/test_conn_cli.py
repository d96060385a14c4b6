"""``postline test-connection`` and ``postline login`` as a user runs them, and secrecy."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading

import pytest
from connhelpers import endpoint_data

from postline.auth import oauth
from postline.cli import main
from postline.state import token_cache
from postline.testing.waits import poll

pytestmark = pytest.mark.stack


def _yaml_value(value) -> str:
    return json.dumps(value)


def _connection_yaml(name: str, directions: dict[str, dict]) -> str:
    lines = ["kind: EmailConnection", f"name: {name}"]
    for direction, data in directions.items():
        lines.append(f"{direction}:")
        for key, value in data.items():
            lines.append(f"  {key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def cli_project(tmp_path, monkeypatch, mail_stack, mailbox_user):
    """A real project directory: keys, sealed secrets, connections for the stack."""
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "key.priv"))
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    assert main(["keys", "create", str(root)]) == 0
    for key, value in (("password", mailbox_user.password),
                       ("client_secret", mail_stack.cc_client_secret)):
        monkeypatch.setattr("sys.stdin", io.StringIO(value))
        assert main(["secret", "set", str(root), "MailSecrets", key]) == 0
    user = mailbox_user.email
    docs = [
        _connection_yaml("Mailbox", {
            "incoming": endpoint_data(mail_stack, protocol="imap", security="tls",
                                      credential="secret", user=user),
            "outgoing": endpoint_data(mail_stack, protocol="smtp", security="starttls",
                                      credential="secret", user=user)}),
        _connection_yaml("App", {
            "incoming": endpoint_data(mail_stack, protocol="pop3", security="starttls",
                                      credential="oauth_client_credentials",
                                      user=mail_stack.cc_mailbox),
            "outgoing": endpoint_data(mail_stack, protocol="smtp", security="tls",
                                      credential="oauth_client_credentials",
                                      user=mail_stack.cc_mailbox)}),
        _connection_yaml("Device", {
            "incoming": endpoint_data(mail_stack, protocol="imap", security="starttls",
                                      credential="oauth_device_flow", user=user),
            "outgoing": endpoint_data(mail_stack, protocol="smtp", security="tls",
                                      credential="oauth_device_flow", user=user)}),
        _connection_yaml("WrongPort", {
            "incoming": endpoint_data(mail_stack, protocol="imap", security="tls",
                                      credential="secret", user=user,
                                      port=mail_stack.ports["imap"])}),
    ]
    (root / "connections.yaml").write_text("---\n".join(docs))
    return root


def _login(root, mail_stack, user, capsys):
    """Run ``postline login`` while a 'person' approves the printed link."""
    def approve():
        # the link is printed before MSAL starts polling; read it from the captured stdout
        def link():
            seen.append(capsys.readouterr().out)
            return re.search(r"open\n\n    (\S+)", "".join(seen))

        m = poll(link, timeout=20)
        if m:
            mail_stack.approve_device(m.group(1), login=user)

    seen: list[str] = []
    t = threading.Thread(target=approve)
    t.start()
    code = main(["login", str(root), "Device"])
    t.join()
    return code, "".join(seen) + capsys.readouterr().out


def test_login_then_test_connection(cli_project, mail_stack, mailbox_user, capsys):
    code, out = _login(cli_project, mail_stack, mailbox_user.email, capsys)
    assert code == 0
    assert "To sign in for connection 'Device' (incoming), open" in out
    assert re.search(r"and enter the code:  \w{4}-\w{4}", out)
    assert f"✓ Signed in as {mailbox_user.email} for incoming" in out
    assert "✓ outgoing: using the same sign-in" in out
    for direction in ("incoming", "outgoing"):
        path = token_cache.cache_path(cli_project / ".postline-state", "Device", direction)
        assert path.stat().st_mode & 0o777 == 0o600
    oauth.forget_providers()  # a new process: only the sealed cache is left
    assert main(["test-connection", str(cli_project), "Device"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASSED") == 2 and "✗" not in out
    assert f"AUTHENTICATE XOAUTH2 as {mailbox_user.email}" in out


def test_test_connection_human_output(cli_project, capsys):
    assert main(["test-connection", str(cli_project), "Mailbox"]) == 0
    out = capsys.readouterr().out
    for step in ("dns", "tcp", "tls", "greeting", "starttls", "capabilities",
                 "authentication", "folders"):
        assert f"✓ {step}" in out
    assert "certificate verified" in out and "issued by" in out and "days left" in out
    assert "server offers: STARTTLS, PIPELINING, SIZE" in out
    assert "PASSED incoming" in out and "PASSED outgoing" in out


def test_test_connection_json_and_failure_exit(cli_project, capsys):
    assert main(["test-connection", str(cli_project), "WrongPort", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    (incoming,) = report["directions"]
    assert [s["step"] for s in incoming["steps"]] == ["dns", "tcp", "tls"]
    assert incoming["steps"][-1]["ok"] is False
    assert "the port seems to speak plaintext" in incoming["error"]
    assert "security: starttls" in incoming["hint"]


def test_test_connection_one_direction(cli_project, capsys):
    assert main(["test-connection", str(cli_project), "App", "--direction", "outgoing",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [d["direction"] for d in report["directions"]] == ["outgoing"]
    assert report["directions"][0]["features"]["PIPELINING"] is True


def test_device_connection_without_login_says_run_login(cli_project, capsys):
    assert main(["test-connection", str(cli_project), "Device", "--direction",
                 "incoming"]) == 1
    out = capsys.readouterr().out
    assert "no saved login for connection 'Device'" in out
    assert f"run 'postline login {cli_project} Device --direction incoming'" in out


def test_microsoft365_without_login_says_to_log_in(cli_project, capsys):
    (cli_project / "m365.yaml").write_text(
        "kind: EmailConnection\nname: M365\ntype: microsoft365\nmicrosoft365:\n"
        "  mailbox: a@example.test\n  credential:\n    type: oauth_device_flow\n"
        "    authority: https://login.microsoftonline.com/tenant\n    client_id: x\n"
        "    scopes: [Mail.Read]\n")
    assert main(["test-connection", str(cli_project), "M365"]) == 1
    out = capsys.readouterr().out
    assert "no saved login for connection 'M365' (microsoft365)" in out


def test_no_secret_appears_anywhere(cli_project, mail_stack, mailbox_user, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    code, out = _login(cli_project, mail_stack, mailbox_user.email, capsys)
    outputs.append(out)
    for name in ("Mailbox", "App", "Device", "WrongPort"):
        for extra in ([], ["--json"]):
            main(["-vv", "test-connection", str(cli_project), name, *extra])
            captured = capsys.readouterr()
            outputs += [captured.out, captured.err]
    # a failing login too: its exception text must not carry the password
    (cli_project / "bad.yaml").write_text(_connection_yaml("Bad", {"incoming": endpoint_data(
        mail_stack, protocol="imap", security="tls", credential="secret",
        user="someone-else@example.test")}))
    main(["-vv", "test-connection", str(cli_project), "Bad", "--json"])
    captured = capsys.readouterr()
    outputs += [captured.out, captured.err]
    tokens = [p._token for p in oauth._PROVIDERS.values() if p._token]
    assert len(tokens) >= 2  # client credentials + device flow tokens were used
    cache = json.loads(token_cache.load(
        _Keyed(cli_project), token_cache.cache_path(cli_project / ".postline-state", "Device",
                                                    "incoming")))
    refresh = [e["secret"] for e in cache["RefreshToken"].values()]
    everything = "\n".join(outputs) + caplog.text + "\n".join(
        r.getMessage() for r in caplog.records)
    assert "AUTHENTICATE" in everything  # the debug log really was captured
    for secret in [mailbox_user.password, mail_stack.cc_client_secret, *tokens, *refresh]:
        assert secret not in everything
    # nor in encoded form (a logged SASL response would be base64)
    for blob in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", everything):
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("latin-1")
        except ValueError:
            continue
        assert "auth=Bearer" not in decoded and mailbox_user.password not in decoded


class _Keyed:
    """Opens the project's sealed files with its key (via the real project loader)."""

    def __init__(self, root):
        from postline.project import open_project

        self._p = open_project(root)

    def open_sealed(self, text):
        return self._p.open_sealed(text)
