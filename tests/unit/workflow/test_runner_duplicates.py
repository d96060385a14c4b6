"""The duplicate check's content rule where the in-memory reader shows it best: entries of
an older ledger (no fingerprint), a mail listed again after a UIDVALIDITY change."""

from __future__ import annotations

from wf_support import mail, read_jsonl

from postline.source.schedule import FakeClock
from postline.state.ledger import Outcome, Place, SqliteLedger, ledger_path
from postline.workflow.engine import run_workflows


def run(project, box):
    return run_workflows(project, once=True, reader_factory=lambda conn: box.reader(),
                         clock=FakeClock())


def test_a_done_entry_without_fingerprint_matches_any_content(project_at, box):
    # written by a postline before ledger version 2: the Message-ID alone decides, as then
    project = project_at(source={"folders": {"input": "INBOX", "ignore": "Ignored"}})
    led = SqliteLedger(path=ledger_path(project.state_dir))
    led.acquire("Src", [Place(key="Box/INBOX/1000/99", connection="Box", folder="INBOX",
                              folder_version="1000", server_id="99")])
    led.finish("Src", [Outcome(key="Box/INBOX/1000/99", state="done",
                               message_id="<old@example.test>")])
    led.close()
    box.add(mail("whatever it said", message_id="<old@example.test>"))
    assert run(project, box).counts["duplicate"] == 1
    assert list(box.folders["Ignored"]) and not box.folders["INBOX"]


def test_a_mail_listed_again_after_a_uidvalidity_change_stays_where_it_is(project_at, box):
    # no done folder: done mails stay in the input folder; after the folder is recreated
    # they are the same mails, not copies, and are not moved to the ignore folder
    project = project_at(source={"folders": {"input": "INBOX", "ignore": "Ignored"}})
    box.add(mail("kept", message_id="<kept@example.test>"))
    assert run(project, box).counts["done"] == 1
    box.recreate("INBOX")
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["duplicate"]) == (0, 1)
    assert len(box.folders["INBOX"]) == 1 and not box.folders.get("Ignored")
    assert len(read_jsonl(project.root / "out/mails.jsonl")) == 1
