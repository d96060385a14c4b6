"""Mail from hostile or careless senders, APPENDed to the real Dovecot and read by
``postline run --once`` (issue 15): every one is done (or fails alone, with a reason), and
what postline keeps of it is bounded."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

import pytest

from postline.source.ledger import SqliteLedger, ledger_path

pytestmark = pytest.mark.stack


def _ledger_entries(project):
    led = SqliteLedger(path=ledger_path(project.open().state_dir))
    try:
        return led.entries("Src")
    finally:
        led.close()


def test_a_long_cjk_attachment_name_is_cut_by_bytes_and_the_mail_is_done(
        source_project, mailbox):
    name = "請求書と領収書の控え" * 9 + ".pdf"      # 90 CJK letters: 274 bytes of UTF-8
    assert len(name.encode()) > 255
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.test", "b@example.test", "長い名前"
    m["Message-ID"] = "<cjk-name@example.test>"
    m.set_content("see attachment\n")
    m.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf", filename=name)
    mailbox.append("INBOX", m.as_bytes())
    p = source_project.write(
        source={"attachments": {"load": True},
                "folders": {"input": "INBOX", "done": "Done", "error": "Error"}},
        workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                            {"type": "directory", "path": "out/mails"}]})
    summary = p.run_once()
    assert summary.counts["done"] == 1 and mailbox.count("Done") == 1
    [rec] = p.records()
    [att] = rec["attachments"]
    assert att["filename"] == name                 # the record keeps the whole name
    path = Path(att["path"])
    assert path.read_bytes() == b"%PDF-1.4 data"
    assert len(path.name.encode()) <= 255 and path.name.endswith(".pdf")
    assert path.name.startswith("00-請求書と領収書の控え")
    assert [e.state for e in _ledger_entries(p)] == ["done"]
