"""Incremental rounds against the in-memory reader: the ledger's pending entries below the
cursor (a lost move, a mail taken but never finished) are acted on as a full listing
would, and an idle round writes nothing."""

from __future__ import annotations

import sqlite3

import pytest
from wf_support import FakeMailbox, mail, read_jsonl

from postline.source.schedule import FakeClock
from postline.state.ledger import SqliteLedger, ledger_path
from postline.workflow.engine import run_workflows


@pytest.fixture
def box() -> FakeMailbox:
    return FakeMailbox(cursor=True)


def run(project, box):
    return run_workflows(project, once=True, reader_factory=lambda conn: box.reader(),
                         clock=FakeClock())


def _sql(project, sql: str, *args) -> None:
    db = sqlite3.connect(str(ledger_path(project.state_dir)))
    with db:
        db.execute(sql, args)
    db.close()


def test_rounds_after_the_first_list_only_new_mail(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": ""}})
    for i in range(5):
        box.add(mail(f"m{i}"))
    assert run(project, box).counts["done"] == 5
    assert run(project, box).mails == 0
    box.add(mail("m5"))
    assert run(project, box).counts["done"] == 1
    assert box.listed == [5, 0, 1]
    led = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        st = led.folder_state("Src", "INBOX")
        assert st["cursor"] == "6" and st["cursor_version"] == "1000"
        # an idle round commits nothing: the ledger file's WAL does not grow
        wal = ledger_path(project.state_dir).with_name("ledger.sqlite3-wal")
        size = wal.stat().st_size if wal.exists() else 0
        assert run(project, box).mails == 0
        assert (wal.stat().st_size if wal.exists() else 0) == size
    finally:
        led.close()


def test_a_done_mail_whose_move_was_lost_below_the_cursor_is_moved_not_processed(
        project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}})
    raws = [mail(f"m{i}") for i in range(3)]
    for raw in raws:
        box.add(raw)
    assert run(project, box).counts["done"] == 3
    # as after a crash between the cursor's commit and the move's: the mail is back in
    # place (same UID) and its entry not settled
    box.folders["INBOX"][2] = box.folders["Done"].pop(min(box.folders["Done"]) + 1)
    _sql(project, "UPDATE mails SET settled=0 WHERE key LIKE '%/2'")
    summary = run(project, box)
    assert summary.mails == 0 and box.folders["INBOX"] == {}
    assert len(box.folders["Done"]) == 3 and len(read_jsonl(project.root /
                                                            "out/mails.jsonl")) == 3
    assert box.listed[-1] == 0   # incremental: nothing new was listed


def test_a_mail_taken_but_never_finished_below_the_cursor_is_processed(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": ""}})
    for i in range(3):
        box.add(mail(f"m{i}"))
    assert run(project, box).counts["done"] == 3
    _sql(project, "UPDATE mails SET state='acquired', settled=0 WHERE key LIKE '%/3'")
    summary = run(project, box)
    assert summary.counts["done"] == 1 and box.listed[-1] == 0
    led = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        [e] = [e for e in led.entries("Src") if e.key.endswith("/3")]
        assert (e.state, e.settled, e.attempts) == ("done", True, 2)
    finally:
        led.close()


def test_without_a_cursor_every_round_lists_everything(project_at):
    box = FakeMailbox()
    project = project_at(source={"folders": {"input": "INBOX", "done": ""}})
    for i in range(2):
        box.add(mail(f"m{i}"))
    run(project, box)
    run(project, box)
    assert box.listed == [2, 2]
