"""An EmailSource + Workflow over a microsoft365 connection, run with ``postline run --once``."""

from __future__ import annotations

import json

import pytest
from graph_helpers import m365_data, make_mail

import postline
from postline.cli import main
from postline.protocols.graph import login

pytestmark = pytest.mark.stack


def write_project(root, stack, graph_url: str, *, folders: dict | None = None,
                  workflow: dict | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    conn = m365_data(stack, graph_url, credential="oauth_device_flow", name="Box")
    docs = [{"kind": "EmailConnection", **conn},
            {"kind": "EmailSource", "name": "Src", "connection": "Box",
             "polling": {"interval": 3600},
             "folders": folders or {"input": "inbox", "done": "Archive/Done"}},
            {"kind": "Workflow", "name": "Flow", "source": "Src",
             "sinks": [{"type": "jsonl", "path": "out/mails.jsonl"}], **(workflow or {})}]
    (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))


def sign_in(root, tmp_path, stack, user, monkeypatch) -> None:
    """A key pair for the project, and the device-flow login of ``user`` approved."""
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "key.priv"))
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    assert main(["keys", "create", str(root)]) == 0
    project = postline.open_project(root)
    login(project, project.get("EmailConnection", "Box"), lambda flow: stack.approve_device(
        flow["verification_uri_complete"], login=user.email))


def test_run_once_ingests_mail_over_graph(tmp_path, mail_stack, graph, mailbox_user, capsys,
                                         monkeypatch):
    root = tmp_path / "proj"
    write_project(root, mail_stack, graph.url)
    sign_in(root, tmp_path, mail_stack, mailbox_user, monkeypatch)
    for i in range(3):
        mail_stack.deliver(mailbox_user.email, make_mail(f"graph {i}"))
    assert main(["run", str(root), "--once"]) == 0, capsys.readouterr()
    records = [json.loads(line) for line in (root / "out/mails.jsonl").read_text().splitlines()]
    assert sorted(r["subject"] for r in records) == ["graph 0", "graph 1", "graph 2"]
    assert main(["run", str(root), "--once"]) == 0          # nothing new the second time
    assert len((root / "out/mails.jsonl").read_text().splitlines()) == 3


def test_ledger_retry_moves_failed_mails_back_over_graph(tmp_path, mail_stack, graph,
                                                         mailbox_user, capsys, monkeypatch):
    root = tmp_path / "proj"
    write_project(root, mail_stack, graph.url,
                  folders={"input": "inbox", "done": "Archive/Done", "error": "Errors"},
                  workflow={"processor": "proc.py"})
    (root / "proc.py").write_text(
        "from pathlib import Path\n"
        "def on_message(message, ctx):\n"
        "    if 'broken' in message['subject'] and not (Path(__file__).parent / 'fixed')"
        ".exists():\n"
        "        raise ValueError('no amount found')\n")
    sign_in(root, tmp_path, mail_stack, mailbox_user, monkeypatch)
    for subject in ("graph ok", "graph broken"):
        mail_stack.deliver(mailbox_user.email, make_mail(subject))
    assert main(["run", str(root), "--once"]) == 0
    assert "1 done, 1 failed" in capsys.readouterr().err
    (root / "fixed").write_text("yes")
    assert main(["ledger", "retry", str(root), "Src", "--all"]) == 0
    assert "1 moved from 'Errors' back to 'inbox'" in capsys.readouterr().out
    assert main(["run", str(root), "--once"]) == 0
    assert "1 done, 0 failed" in capsys.readouterr().err
    records = [json.loads(line) for line in (root / "out/mails.jsonl").read_text().splitlines()]
    assert sorted(r["subject"] for r in records) == ["graph broken", "graph ok"]
