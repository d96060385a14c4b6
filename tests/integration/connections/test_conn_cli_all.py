"""``postline test-connection`` (text and ``--json``) for every protocol x security mode x
direction the dev stack offers, and for every connection of every example project.

What a user sees: exit status 0, a ✓ for every step, ``PASSED <direction>``, the server's
notable capabilities; with ``--json`` one JSON document whose steps and features say the same.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from connhelpers import endpoint_data

from postline.cli import main
from postline.cli.stack_cmds import env_vars

pytestmark = pytest.mark.stack

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# (protocol, security) -> the steps test-connection shows, in order.
_STEPS = {
    "none": ["dns", "tcp", "greeting", "capabilities", "authentication"],
    "starttls": ["dns", "tcp", "greeting", "capabilities", "starttls", "capabilities",
                 "authentication"],
    "tls": ["dns", "tcp", "tls", "greeting", "capabilities", "authentication"],
}
# What the server offers that the summary line must show (Dovecot and Postfix of the stack).
_OFFERS = {"imap": ["IDLE", "MOVE", "UIDPLUS"], "pop3": ["UIDL", "TOP"],
           "smtp": ["PIPELINING", "SIZE"]}
# The word announcing STARTTLS before the upgrade (shown although gone after it).
_STARTTLS_WORD = {"imap": "STARTTLS", "pop3": "STLS", "smtp": "STARTTLS"}

COMBINATIONS = [(protocol, security) for protocol in ("imap", "pop3", "smtp")
                for security in ("none", "starttls", "tls")]


def _name(protocol: str, security: str) -> str:
    return f"{protocol.capitalize()}{security.capitalize()}"


def _yaml(name: str, direction: str, data: dict) -> str:
    lines = ["kind: EmailConnection", f"name: {name}", f"{direction}:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in data.items()]
    other = "outgoing" if direction == "incoming" else "incoming"
    lines.append(f"{other}: {{protocol: none}}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def matrix_project(tmp_path, monkeypatch, mail_stack, mailbox_user):
    """A project with one connection per protocol x security, each for one direction."""
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "key.priv"))
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    assert main(["keys", "create", str(root)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(mailbox_user.password))
    assert main(["secret", "set", str(root), "MailSecrets", "password"]) == 0
    docs = []
    for protocol, security in COMBINATIONS:
        direction = "outgoing" if protocol == "smtp" else "incoming"
        docs.append(_yaml(_name(protocol, security), direction, endpoint_data(
            mail_stack, protocol=protocol, security=security, credential="secret",
            user=mailbox_user.email)))
    (root / "connections.yaml").write_text("---\n".join(docs))
    return root


@pytest.mark.parametrize(("protocol", "security"), COMBINATIONS)
def test_every_protocol_and_security(protocol, security, matrix_project, mail_stack,
                                     mailbox_user, capsys):
    name = _name(protocol, security)
    direction = "outgoing" if protocol == "smtp" else "incoming"
    port = endpoint_data(mail_stack, protocol=protocol, security=security,
                         credential="none", user="")["port"]

    assert main(["test-connection", str(matrix_project), name]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == ""
    assert f"{name} {direction}: {protocol} {mail_stack.host}:{port}, security {security}" \
        in out
    # IMAP servers announce more after login (MOVE, UIDPLUS): asked again
    steps = _STEPS[security] + {"imap": ["capabilities", "folders"], "pop3": ["folders"],
                                "smtp": []}[protocol]
    shown = [line.split()[1] for line in out.splitlines() if line.startswith("  ✓ ")]
    assert shown == steps, out
    assert "✗" not in out and f"PASSED {direction}" in out
    offers = next(line for line in out.splitlines() if "server offers:" in line)
    for word in _OFFERS[protocol]:
        assert word in offers
    if security == "starttls":
        assert _STARTTLS_WORD[protocol] in offers
    if security == "none":
        assert "not encrypted (security: none)" in out
    else:
        assert "certificate verified" in out or "issued by" in out
    if direction == "incoming":
        assert re.search(r"✓ folders .* \d+ folder\(s\): .*INBOX", out)

    assert main(["test-connection", str(matrix_project), name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["connection"] == name and report["ok"] is True
    (d,) = report["directions"]
    assert (d["direction"], d["protocol"], d["security"], d["port"]) == \
        (direction, protocol, security, port)
    assert [s["step"] for s in d["steps"]] == steps
    assert all(s["ok"] for s in d["steps"]) and d["error"] is None
    for word in _OFFERS[protocol]:
        assert d["features"][word]  # True, or SMTP's SIZE limit in bytes
    if security == "starttls":
        assert d["features"][_STARTTLS_WORD[protocol]] is True
    assert "PLAIN" in d["features"]["AUTH"]
    if direction == "incoming":
        assert "INBOX" in d["folders"]


# -- the example projects -------------------------------------------------------------------

def _example_connections() -> list:
    """(project, connection) for every EmailConnection of every example project."""
    from ruamel.yaml import YAML

    found = []
    for project in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        for path in sorted(project.rglob("*.y*ml")):
            for doc in YAML(typ="safe").load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "EmailConnection":
                    found.append(pytest.param(project.name, doc["name"],
                                              id=f"{project.name}-{doc['name']}"))
    return found


# The example projects whose servers the dev stack does not provide.
_NOT_ON_THE_STACK = {
    "reference": "its hosts are placeholders (imap.example.com, smtp.example.com, contoso "
                 "on Microsoft Graph) with fixed ports: it is only validated",
}


@pytest.fixture
def example_env(tmp_path, monkeypatch, mail_stack, mailbox_user):
    """What a user of the dev stack has: `eval "$(postline dev-stack env)"`, a mailbox user
    and its password in the variables the example's Secret reads."""
    for key, value in env_vars(mail_stack).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DEMO_USER", mailbox_user.email)
    monkeypatch.setenv("POSTLINE_DEMO_PASSWORD", mailbox_user.password)
    monkeypatch.setenv("POSTLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "no-key.priv"))
    return tmp_path


def test_every_example_connection_is_listed():
    names = {p.values[:2] for p in _example_connections()}
    assert {("local", "LocalMail"), ("local", "LocalPop3")} <= names
    assert {project for project, _ in names} - {"local"} <= set(_NOT_ON_THE_STACK)


@pytest.mark.parametrize(("project", "connection"), _example_connections())
def test_example_connection(project, connection, example_env, capsys):
    if project in _NOT_ON_THE_STACK:
        pytest.skip(f"examples/{project} cannot run on the dev stack: "
                    f"{_NOT_ON_THE_STACK[project]}")
    root = example_env / project
    shutil.copytree(EXAMPLES / project, root)
    assert main(["test-connection", str(root), connection]) == 0
    out = capsys.readouterr().out
    assert "✗" not in out and "FAILED" not in out
    assert "PASSED incoming" in out

    assert main(["test-connection", str(root), connection, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    for d in report["directions"]:
        assert d["ok"] is True and all(s["ok"] for s in d["steps"])
        assert d["features"]["AUTH"]
