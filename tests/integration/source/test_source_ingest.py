"""EmailSource + Workflow against the real Dovecot of the local stack."""

from __future__ import annotations

import threading

import pytest
from srchelpers import DropProxy, deliver_many, make_mail, wait_until

from postline.source.record import validate_record
from postline.state.ledger import SqliteLedger, ledger_path

pytestmark = pytest.mark.stack

PDF = b"%PDF-1.4\n" + b"0" * 3000


def test_imap_ingest_records_attachments_and_nested_non_ascii_done_folder(
        source_project, mailbox, mail_stack, mailbox_user):
    deliver_many(mail_stack, mailbox_user.email, [
        make_mail(1, attachments=[("Rechnung März.pdf", "application/pdf", PDF)]),
        make_mail(2, "日本語の件名"), make_mail(3)])
    p = source_project.write(source={
        "folders": {"input": "INBOX", "done": "Archiv/Erledigt ✓"},
        "attachments": {"load": True},
        "stream_name": "orders-${mail:folder}-${mail:subject}"},
        workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                            {"type": "directory", "path": "out/mails"}]})
    summary = p.run_once()
    assert summary.counts["done"] == 3 and not summary.errors
    records = p.records()
    for r in records:
        validate_record(r)
    assert sorted(r["subject"] for r in records) == ["Grüße Nr. 1", "Grüße Nr. 3", "日本語の件名"]
    rec = next(r for r in records if r["subject"] == "Grüße Nr. 1")
    assert rec["stream_name"] == "orders-INBOX-Grüße Nr. 1"
    assert rec["from"] == [{"name": "Zoë", "address": "zoe@example.test"}]
    assert rec["received"].endswith("Z") and rec["text"].startswith("Hallo 1")
    [att] = rec["attachments"]
    assert att["filename"] == "Rechnung März.pdf" and att["size"] == len(PDF)
    assert open(att["path"], "rb").read() == PDF
    assert open(rec["eml_path"], "rb").read().startswith(b"Return-Path")
    assert mailbox.count("INBOX") == 0 and mailbox.count("Archiv/Erledigt ✓") == 3
    # a second round finds nothing new
    assert p.run_once().mails == 0



def test_nested_folders_on_a_server_whose_delimiter_is_a_dot(tmp_path, mail_stack):
    # the stack's "dotted*" users see "." as the hierarchy delimiter (Courier, Cyrus,
    # Dovecot's Maildir++ default): "Archiv/Erledigt" in the asset is Archiv.Erledigt there
    from srchelpers import Mailbox, SourceProject

    from postline.testing.info import MailUser

    user = MailUser.fresh("dotted")
    box = Mailbox(mail_stack, user)
    deliver_many(mail_stack, user.email, [make_mail(1), make_mail(2, "[skip] me")])
    p = SourceProject(tmp_path / "proj", mail_stack, user).write(source={
        "folders": {"input": "INBOX", "done": "Archiv/Erledigt", "ignore": "Archiv/Übrig"},
        "filters": {"subject": {"blacklist": [r"^\[skip\]"]}}})
    summary = p.run_once()
    assert (summary.counts["done"], summary.counts["ignored"]) == (1, 1)
    assert box.count("Archiv.Erledigt") == 1 and box.count("Archiv.Übrig") == 1
    with box.client() as c:
        names = [name for _, _, name in c.list_folders()]
    assert "Archiv.Erledigt" in names and not any("/" in n for n in names)

def test_filters_processor_failure_and_every_folder(source_project, mailbox, mail_stack,
                                                    mailbox_user):
    deliver_many(mail_stack, mailbox_user.email, [
        make_mail(1, "Invoice 1"), make_mail(2, "Invoice 2", sender="promo@spam.test"),
        make_mail(3, "Hello there"), make_mail(4, "Invoice 4 broken")])
    (source_project.root).mkdir(parents=True)
    (source_project.root / "proc.py").write_text(
        "def on_message(message, ctx):\n"
        "    if 'broken' in message['subject']:\n"
        "        raise ValueError('no amount found')\n"
        "    message['amount'] = 42\n")
    p = source_project.write(
        source={"folders": {"input": "INBOX", "done": "Done", "error": "Error",
                            "ignore": "Ignored"},
                "filters": {"from": {"blacklist": ["@spam\\.test$"]},
                            "subject": {"whitelist": ["^invoice"]}}},
        workflow={"processor": "proc.py"})
    summary = p.run_once()
    assert (summary.counts["done"], summary.counts["failed"], summary.counts["ignored"]) == \
        (1, 1, 2)
    assert mailbox.subjects("Done") == ["Invoice 1"]
    assert mailbox.subjects("Error") == ["Invoice 4 broken"]
    assert mailbox.subjects("Ignored") == ["Hello there", "Invoice 2"]
    assert mailbox.count("INBOX") == 0
    [rec] = p.records()
    assert rec["amount"] == 42
    led = SqliteLedger(path=ledger_path(p.open().state_dir))
    [failed] = led.entries("Src", state="failed")
    assert failed.reason.startswith("processor: ValueError: no amount found (at ")
    assert failed.reason.endswith("proc.py:3)")     # the line of the processor that raised
    led.close()


def test_attachment_limits(source_project, mail_stack, mailbox_user):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(1, attachments=[
        ("a.pdf", "application/pdf", b"1" * 3000), ("b.pdf", "application/pdf", b"2" * 3000),
        ("c.exe", "application/x-msdownload", b"3" * 10), ("d.png", "image/png", b"4" * 9000)])])
    p = source_project.write(source={"attachments": {
        "load": True, "max_total_kb": 5,
        "blacklist": [{"type": "application/x-msdownload"}],
        "whitelist": [{"type": "application/pdf"}, {"type": "image/.*", "max_kb": 8}]}})
    p.run_once()
    [rec] = p.records()
    got = {a["filename"]: (a["stored"], a["skipped_reason"] or "") for a in rec["attachments"]}
    assert got["a.pdf"] == (True, "")
    assert got["b.pdf"][0] is False and "total cap" in got["b.pdf"][1]
    assert got["c.exe"][0] is False and "blacklisted" in got["c.exe"][1]
    assert got["d.png"][0] is False and "whitelist limit" in got["d.png"][1]


@pytest.mark.parametrize("action", ["delete", "keep"])
def test_pop3_ingest_done_delete_or_keep(action, source_project, mailbox, mail_stack,
                                         mailbox_user):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i) for i in range(3)])
    p = source_project.write(protocol="pop3", source={"pop3": {"done": action}})
    assert p.run_once().counts["done"] == 3
    assert len(p.records()) == 3
    assert mailbox.count("INBOX") == (0 if action == "delete" else 3)
    assert p.run_once().mails == 0   # kept mails are known by UIDL
    assert len(p.records()) == 3


def test_idle_picks_up_new_mail(source_project, mailbox, mail_stack, mailbox_user):
    from postline.workflow.engine import run_workflows

    p = source_project.write(source={"polling": {"interval": 3600, "idle": True}})
    stop = threading.Event()
    t = threading.Thread(target=run_workflows, args=(p.open(),),
                         kwargs={"stop": stop}, daemon=True)
    t.start()
    try:
        for i in range(2):
            mailbox.append("INBOX", make_mail(i, f"pushed {i}"))
            wait_until(lambda i=i: len(p.records()) == i + 1, 10, f"record of pushed mail {i}")
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_uidvalidity_change_reread_skips_done_and_stop_refuses(source_project, mailbox):
    mails = [make_mail(i) for i in range(3)]
    for raw in mails:
        mailbox.append("Orders", raw)
    p = source_project.write(source={"folders": {"input": "Orders"}})
    assert p.run_once().counts["done"] == 3
    c = mailbox.client()
    c.delete_folder("Orders")
    c.logout()
    for raw in mails + [make_mail(9, "new after recreate")]:
        mailbox.append("Orders", raw)
    summary = p.run_once()
    assert summary.counts["done"] == 1 and summary.counts["duplicate"] == 3
    assert len(p.records()) == 4
    # the same change with uidvalidity_change: stop
    c = mailbox.client()
    c.delete_folder("Orders")
    c.logout()
    mailbox.append("Orders", mails[0])
    p.write(source={"folders": {"input": "Orders"}, "uidvalidity_change": "stop"})
    summary = p.run_once()
    assert "UIDVALIDITY of folder 'Orders' changed" in summary.errors["Flow"]


def test_server_drop_mid_run_reconnects_and_loses_nothing(source_project, mail_stack,
                                                          mailbox_user, mailbox, monkeypatch):
    from postline.workflow import mailjob
    from postline.workflow.engine import run_workflows

    deliver_many(mail_stack, mailbox_user.email, [make_mail(i) for i in range(30)])
    proxy = DropProxy(mail_stack.ports["imap"])
    source_project.port = proxy.port
    p = source_project.write(source={"folders": {"input": "INBOX", "done": "Done"},
                                     "batch_size": 5})
    real = mailjob.prepare
    seen = {"n": 0}

    def prepare_and_cut(*a, **kw):
        seen["n"] += 1
        if seen["n"] == 12:
            proxy.cut()      # the server goes away in the middle of the run
        return real(*a, **kw)
    monkeypatch.setattr("postline.workflow.batch.prepare", prepare_and_cut)
    stop = threading.Event()
    t = threading.Thread(target=run_workflows, args=(p.open(),), kwargs={"stop": stop},
                         daemon=True)
    t.start()
    try:
        wait_until(lambda: mailbox.count("Done") == 30, 30, "all 30 mails in Done")
    finally:
        stop.set()
        t.join(10)
        proxy.close()
    keys = [r["key"] for r in p.records()]
    assert len(keys) == 30 and len(set(keys)) == 30
    assert proxy.accepted >= 2 and mailbox.count("INBOX") == 0
