"""``postline try --peek`` over Microsoft Graph: only GET requests, nothing moved."""

from __future__ import annotations

import json

import pytest
from graph_helpers import make_mail
from test_graph_workflow import sign_in, write_project

from postline.cli import main

pytestmark = pytest.mark.stack


def test_peek_over_graph_only_reads(tmp_path, mail_stack, graph, mailbox_user, capsys,
                                    monkeypatch):
    root = tmp_path / "proj"
    write_project(root, mail_stack, graph.url)
    sign_in(root, tmp_path, mail_stack, mailbox_user, monkeypatch)
    for i in range(3):
        mail_stack.deliver(mailbox_user.email, make_mail(f"graph {i}"))
    graph.clear()
    capsys.readouterr()   # the key pair's line
    assert main(["try", str(root), "Flow", "--peek", "2", "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["subject"] for r in results) == ["graph 1", "graph 2"]
    assert {r["folder"] for r in results} == {"Archive/Done"}
    assert graph.requests and {seen.method for seen in graph.requests} == {"GET"}
    assert mail_stack.subjects(mailbox_user.email) == ["graph 0", "graph 1", "graph 2"]
    assert mail_stack.subjects(mailbox_user.email, "Archive/Done") == []
    assert not (root / "out").exists()
