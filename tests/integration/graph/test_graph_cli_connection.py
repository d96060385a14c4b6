"""``postline test-connection`` on a microsoft365 connection, as docs/connections.md shows
it: one ``microsoft365`` block with the steps token, mailbox and folders (Graph test double
and the stack's OAuth server)."""

from __future__ import annotations

import io
import json

import pytest
from graph_helpers import m365_data

from postline.cli import main

pytestmark = pytest.mark.stack


@pytest.fixture
def m365_project(tmp_path, monkeypatch, mail_stack, graph):
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "key.priv"))
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    assert main(["keys", "create", str(root)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(mail_stack.cc_client_secret))
    assert main(["secret", "set", str(root), "GraphSecrets", "client_secret"]) == 0
    data = m365_data(mail_stack, graph.url, credential="oauth_client_credentials",
                     mailbox=mail_stack.cc_mailbox, name="Office")
    (root / "office.yaml").write_text(json.dumps({"kind": "EmailConnection", **data}))
    return root


def test_test_connection_of_a_microsoft365_connection(m365_project, mail_stack, capsys):
    capsys.readouterr()
    assert main(["test-connection", str(m365_project), "Office"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Office microsoft365: graph 127.0.0.1:")
    assert lines[0].endswith(", security tls")
    assert [line.split()[1] for line in lines if line.startswith("  ✓ ")] == \
        ["token", "mailbox", "folders"]
    assert "not implemented" not in out and "✗" not in out
    assert f"server offers: mailbox {mail_stack.cc_mailbox}, credential " \
           "oauth_client_credentials" in out
    assert "PASSED microsoft365" in out

    for direction in ("incoming", "outgoing"):   # one Graph session serves both
        assert main(["test-connection", str(m365_project), "Office", "--direction",
                     direction, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        [d] = report["directions"]
        assert (report["ok"], d["direction"], d["protocol"]) == (True, "microsoft365", "graph")
        assert [s["step"] for s in d["steps"]] == ["token", "mailbox", "folders"]
        assert "Inbox" in d["folders"]
