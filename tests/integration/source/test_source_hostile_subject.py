"""A sender outside controls the subject the demo processor forwards into a notification:
a line separator in it must fail that mail cleanly, with the reason, and leave nothing
``unknown`` in the outbox (it used to sit there forever, never attempted)."""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest
from srchelpers import wait_until

from postline.state.ledger import SqliteLedger, ledger_path
from postline.state.outbox import Outbox
from postline.testing.smtp_faults import FaultyServer

DEMO = Path(__file__).parents[3] / "examples" / "local" / "processors" / "tag.py"


def raw_mail(subject: str) -> bytes:
    if not subject.isascii():
        subject = f"=?utf-8?b?{base64.b64encode(subject.encode()).decode()}?="
    return (f"From: Mallory <mallory@example.test>\r\nTo: reader@example.test\r\n"
            f"Subject: {subject}\r\nDate: Wed, 01 May 2024 12:00:00 +0000\r\n"
            f"Message-ID: <hostile-{time.time_ns()}@example.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n").encode()


@pytest.fixture
def smtp():
    with FaultyServer(mode="accept") as server:
        yield server


def test_a_line_separator_in_a_forwarded_subject_fails_the_mail_cleanly(
        source_project, mailbox, smtp):
    source_project.root.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO, source_project.root / "tag.py")
    p = source_project.write(
        source={"folders": {"input": "INBOX", "done": "Done", "error": "Error"}},
        workflow={"processor": "tag.py", "services": {"Notify": "Notify"}},
        extra=[{"kind": "EmailConnection", "name": "Out",
                "outgoing": {"protocol": "smtp", "host": "127.0.0.1", "port": smtp.port,
                             "security": "none", "credential": {"type": "none"}}},
               {"kind": "EmailService", "name": "Notify", "connection": "Out",
                "default_from": "Demo <demo@example.test>"}])
    mailbox.append("INBOX", raw_mail("URGENT: pay now\u2028Bcc: victim@example.test"))
    mailbox.append("INBOX", raw_mail("URGENT: disk full"))
    summary = p.run_once()
    assert (summary.counts["done"], summary.counts["failed"]) == (1, 1)
    assert mailbox.subjects("Done") == ["URGENT: disk full"]
    assert len(mailbox.subjects("Error")) == 1 and mailbox.count("INBOX") == 0
    state = p.open().state_dir
    led = SqliteLedger(path=ledger_path(state))
    try:
        [failed] = led.entries("Src", state="failed")
    finally:
        led.close()
    assert "Subject contains U+2028 (LINE SEPARATOR) at position" in failed.reason
    assert "processor: MessageError" in failed.reason
    outbox = Outbox(state / "outbox.sqlite")
    try:
        # only the good mail's notification was queued; it is delivered, never unknown
        assert wait_until(lambda: len(smtp.received) == 1 or outbox.counts("Notify")["sent"],
                          what="the notification of the good mail")
        [entry] = outbox.list("Notify")
        assert entry.state in ("queued", "sent") and "disk full" in entry.summary
        assert outbox.counts("Notify")["unknown"] == 0
    finally:
        outbox.close()
