"""``postline ledger retry``: failed mails go back from the error folder into the input
folder, are forgotten by the ledger, and the next round processes them (each once)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from srchelpers import deliver_many, make_mail

from postline.cli import main
from postline.state.ledger import SqliteLedger, ledger_path

pytestmark = [pytest.mark.stack]

PROC = ("from pathlib import Path\n"
        "def on_message(message, ctx):\n"
        "    if 'broken' in message['subject'] and not (Path(__file__).parent / 'fixed')"
        ".exists():\n"
        "        raise ValueError('no amount found')\n")


def _without_message_id(raw: bytes) -> bytes:
    return re.sub(rb"(?im)^Message-ID:.*\r?\n", b"", raw, count=1)


def _project(source_project, monkeypatch, **source):
    source_project.root.mkdir(parents=True, exist_ok=True)
    (source_project.root / "proc.py").write_text(PROC)
    monkeypatch.setenv("IT_PASSWORD", source_project.user.password)
    return source_project.write(source=source, workflow={"processor": "proc.py"})


def _failed(p) -> list:
    led = SqliteLedger(path=ledger_path(p.open().state_dir))
    try:
        return led.entries("Src", state="failed")
    finally:
        led.close()


def test_retry_all_moves_failed_mails_back_and_the_next_round_processes_them(
        source_project, mailbox, mail_stack, mailbox_user, monkeypatch, capsys):
    deliver_many(mail_stack, mailbox_user.email, [
        make_mail(1, "Invoice 1"), make_mail(2, "Invoice 2 broken"),
        _without_message_id(make_mail(3, "Invoice 3 broken, no Message-ID")),
        make_mail(4, "Invoice 4")])
    p = _project(source_project, monkeypatch,
                 folders={"input": "INBOX", "done": "Done", "error": "Error"})
    first = p.run_once()
    assert (first.counts["done"], first.counts["failed"]) == (2, 2)
    mailbox.append("Error", make_mail(5, "someone else's mail in Error"))
    (p.root / "fixed").write_text("yes")

    assert main(["ledger", "retry", str(p.root), "Src", "--all"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == ("retrying 2 mails of source Src; 2 moved from 'Error' back to "
                           "'INBOX'; the next round of 'postline run' processes them")
    assert mailbox.subjects("Error") == ["someone else's mail in Error"]
    assert _failed(p) == []

    second = p.run_once()
    assert (second.counts["done"], second.counts["failed"]) == (2, 0)
    subjects = Counter(r["subject"] for r in p.records())
    assert len(subjects) == 4 and set(subjects.values()) == {1}
    assert mailbox.count("Done") == 4 and mailbox.count("INBOX") == 0


def test_retry_by_id_refuses_entries_that_are_not_failed_and_reports_vanished_mails(
        source_project, mailbox, mail_stack, mailbox_user, monkeypatch, capsys):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(1, "Invoice 1"),
                                                  make_mail(2, "Invoice 2 broken")])
    p = _project(source_project, monkeypatch,
                 folders={"input": "INBOX", "done": "Done", "error": "Error"})
    p.run_once()
    led = SqliteLedger(path=ledger_path(p.open().state_dir))
    [done] = led.entries("Src", state="done")
    led.close()
    assert main(["ledger", "retry", str(p.root), "Src", "--id", done.key]) == 1
    err = capsys.readouterr().err
    assert f"ledger entry '{done.key}' of source Src is done, not failed" in err

    # the failed mail was deleted from the error folder by hand: said, and it stays failed
    with mailbox.client() as c:
        c.select_folder("Error")
        c.delete_messages(c.search("ALL"))
        c.expunge()
    [failed] = _failed(p)
    assert main(["ledger", "retry", str(p.root), "Src", "--id", failed.key]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == (f"postline: {failed.key}: not found in folder 'Error' (moved or "
                           "deleted there since?); it stays failed")
    assert out.strip().startswith("retrying 0 mails of source Src")
    assert [e.key for e in _failed(p)] == [failed.key]


def test_retry_without_an_error_folder_only_forgets_the_failure(
        source_project, mailbox, mail_stack, mailbox_user, monkeypatch, capsys):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(1, "Invoice 1 broken")])
    p = _project(source_project, monkeypatch, folders={"input": "INBOX", "done": "Done"})
    assert p.run_once().counts["failed"] == 1
    assert mailbox.subjects("INBOX") == ["Invoice 1 broken"]     # nowhere to move it
    assert p.run_once().mails == 0                               # failed: not read again
    (p.root / "fixed").write_text("yes")
    assert main(["ledger", "retry", str(p.root), "Src", "--all"]) == 0
    assert capsys.readouterr().out.startswith("retrying 1 mail of source Src; the next")
    assert p.run_once().counts["done"] == 1
    assert mailbox.subjects("Done") == ["Invoice 1 broken"]


def test_retry_on_pop3_forgets_kept_failures(source_project, mail_stack, mailbox_user,
                                             monkeypatch, capsys):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(1, "Invoice 1 broken")])
    source_project.root.mkdir(parents=True, exist_ok=True)
    (source_project.root / "proc.py").write_text(PROC)
    monkeypatch.setenv("IT_PASSWORD", source_project.user.password)
    p = source_project.write(protocol="pop3", source={"pop3": {"done": "delete",
                                                               "error": "keep"}},
                             workflow={"processor": "proc.py"})
    assert p.run_once().counts["failed"] == 1
    (p.root / "fixed").write_text("yes")
    assert main(["ledger", "retry", str(p.root), "Src", "--all"]) == 0
    capsys.readouterr()
    assert p.run_once().counts["done"] == 1
    assert main(["ledger", "retry", str(p.root), "Src", "--all"]) == 0
    assert capsys.readouterr().out.strip() == "no failed entries for source Src"
