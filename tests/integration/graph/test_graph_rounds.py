"""Polling rounds over Microsoft Graph keep their delta link (issue 19): an idle round costs
one request, a reset lists the folder again, ``ledger retry`` finds mails by immutable id."""

from __future__ import annotations

import json
import sqlite3
from email.message import EmailMessage

import pytest
from graph_helpers import make_mail
from test_graph_workflow import sign_in, write_project

from postline.cli import main

pytestmark = pytest.mark.stack


def delta_calls(graph) -> list[str]:
    """The query of each delta request since the last clear ('' for a full round's first)."""
    return [s.query for s in graph.requests if s.path.endswith("/messages/delta")]


def lines(root) -> list[dict]:
    path = root / "out/mails.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_an_idle_round_costs_one_delta_request(tmp_path, mail_stack, graph, mailbox_user,
                                               capsys, monkeypatch):
    root = tmp_path / "proj"
    write_project(root, mail_stack, graph.url, folders={"input": "inbox"})
    sign_in(root, tmp_path, mail_stack, mailbox_user, monkeypatch)
    for i in range(25):  # three pages of the double
        mail_stack.deliver(mailbox_user.email, make_mail(f"m{i}"))
    assert main(["run", str(root), "--once"]) == 0
    assert len(lines(root)) == 25
    first = delta_calls(graph)
    assert not any("$deltatoken" in q for q in first) and len(first) >= 3
    stored = sqlite3.connect(root / ".postline-state/delta-links.sqlite3").execute(
        "SELECT source, folder, link FROM delta_links").fetchall()
    assert [(s, f) for s, f, _ in stored] == [("Src", "inbox")]
    assert "$deltatoken=" in stored[0][2]
    for _ in range(2):   # the first may replay an item (known: nothing processed)
        graph.clear()
        assert main(["run", str(root), "--once"]) == 0
        calls = delta_calls(graph)
        assert len(calls) == 1 and "$deltatoken=" in calls[0]
        assert not [s for s in graph.requests if s.path.endswith("/$value")]
    assert len(lines(root)) == 25
    mail_stack.deliver(mailbox_user.email, make_mail("late"))
    assert main(["run", str(root), "--once"]) == 0
    assert [r["subject"] for r in lines(root)][25:] == ["late"]
    capsys.readouterr()
    # ledger reset: the next round lists the folder in full, so the mails come again
    assert main(["ledger", "reset", str(root), "Src", "--all"]) == 0
    graph.clear()
    assert main(["run", str(root), "--once"]) == 0
    assert not any("$deltatoken" in q for q in delta_calls(graph))
    assert "26 mails: 26 done" in capsys.readouterr().err   # (the JSONL sink skips repeats)
    # the delta link lost on the server: one full round, nothing processed twice
    graph.clear()
    graph.lose_sync_state(status=400)
    assert main(["run", str(root), "--once"]) == 0
    assert "0 mails" in capsys.readouterr().err
    assert [s.status for s in graph.requests if s.path.endswith("/delta")][0] == 400


def test_ledger_retry_finds_a_mail_without_message_id_by_its_immutable_id(
        tmp_path, mail_stack, graph, mailbox_user, capsys, monkeypatch):
    root = tmp_path / "proj"
    write_project(root, mail_stack, graph.url,
                  folders={"input": "inbox", "done": "Archive/Done", "error": "Errors"},
                  workflow={"processor": "proc.py"})
    (root / "proc.py").write_text(
        "from pathlib import Path\n"
        "def on_message(message, ctx):\n"
        "    if not (Path(__file__).parent / 'fixed').exists():\n"
        "        raise ValueError('no amount found')\n")
    sign_in(root, tmp_path, mail_stack, mailbox_user, monkeypatch)
    m = EmailMessage()   # no Message-ID: only its content hash, which Exchange may change
    m["From"], m["To"], m["Subject"] = "a@example.test", mailbox_user.email, "no id"
    m.set_content("amount: 12\n")
    mail_stack.deliver(mailbox_user.email, m.as_bytes())
    assert main(["run", str(root), "--once"]) == 0
    assert "0 done, 1 failed" in capsys.readouterr().err
    (root / "fixed").write_text("yes")
    graph.clear()
    assert main(["ledger", "retry", str(root), "Src", "--all"]) == 0
    assert "1 moved from 'Errors' back to 'inbox'" in capsys.readouterr().out
    assert not [s for s in graph.requests if s.path.endswith("/$value")]  # matched by id
    assert main(["run", str(root), "--once"]) == 0
    assert "1 done, 0 failed" in capsys.readouterr().err


def test_the_tenant_check_script_runs_read_only_by_default(tmp_path, mail_stack, graph,
                                                          mailbox_user, capsys, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    root = tmp_path / "proj"
    write_project(root, mail_stack, graph.url, folders={"input": "inbox"})
    sign_in(root, tmp_path, mail_stack, mailbox_user, monkeypatch)
    for i in range(3):
        mail_stack.deliver(mailbox_user.email, make_mail(f"c{i}"))
    script = Path(__file__).resolve().parents[3] / "scripts/m365-check.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(root), "Box"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "delta, full round" in out and "'items': 3" in out
    assert "made-up delta token            HTTP 410 syncStateNotFound" in out
    assert "two downloads identical" in out
    assert not [s for s in graph.requests if s.method not in ("GET",)]   # read-only
    monkeypatch.setattr(sys, "argv", [str(script), str(root), "Box", "--write"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(script), run_name="__main__")
    assert "creating an existing folder    HTTP 400 ErrorFolderExists" in capsys.readouterr().out
