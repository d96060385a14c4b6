"""Duplicates on the real Dovecot (mails put there by IMAP APPEND): a mail is a duplicate
only when its Message-ID *and* its content agree with a mail already done; duplicates go to
the ignore folder when there is one; a different mail reusing a Message-ID is processed."""

from __future__ import annotations

import json

import pytest

from postline.cli import main

pytestmark = pytest.mark.stack

FOLDERS = {"input": "INBOX", "done": "Done", "ignore": "Ignored"}


def _mail(subject: str, body: str, *, mid: str = "<reused@example.test>",
          date: str = "Wed, 01 May 2024 12:00:00 +0000", received: str = "") -> bytes:
    """A mail as a server would hold it; ``received`` adds what a server adds on delivery."""
    head = received + (f"From: Zoë <zoe@example.test>\r\nTo: reader@example.test\r\n"
                       f"Subject: {subject}\r\nDate: {date}\r\nMessage-ID: {mid}\r\n"
                       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: 8bit\r\n\r\n")
    return head.encode() + body.encode()


def _again(raw: bytes, n: int) -> bytes:
    """The same mail delivered once more: new Received and Delivered-To headers on top,
    and a relay changed the transfer encoding (8bit -> quoted-printable)."""
    head, body = raw.split(b"\r\n\r\n", 1)
    qp = _qp(body)
    head = head.replace(b"Content-Transfer-Encoding: 8bit",
                        b"Content-Transfer-Encoding: quoted-printable")
    return (f"Received: from relay{n}.example.test by mx.example.test; "
            f"Thu, 02 May 2024 0{n}:00:00 +0000\r\nDelivered-To: reader@example.test\r\n"
            ).encode() + head + b"\r\n\r\n" + qp


def _qp(body: bytes) -> bytes:
    import quopri

    return quopri.encodestring(body.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")


def _ledger(root, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["ledger", "list", str(root), "Src", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_copy_goes_to_the_ignore_folder_a_reused_message_id_is_processed(
        source_project, mailbox, monkeypatch, capsys):
    p = source_project.write(source={"folders": FOLDERS})
    monkeypatch.setenv("IT_PASSWORD", source_project.user.password)
    first = _mail("Ticket 1 opened", "Printer on floor 2 is jammed.\n")
    mailbox.append("INBOX", first)
    assert p.run_once().counts["done"] == 1

    # the same mail again, as a server re-delivers it: a duplicate, moved to Ignored
    mailbox.append("INBOX", _again(first, 1))
    summary = p.run_once()
    assert (summary.counts["done"], summary.counts["duplicate"]) == (0, 1)
    assert mailbox.subjects("Ignored") == ["Ticket 1 opened"]
    assert mailbox.subjects("INBOX") == []

    # a different mail that reuses the Message-ID (a ticketing system's update): processed
    update = _mail("Ticket 1 updated", "A technician is on the way.\n",
                   date="Wed, 01 May 2024 13:00:00 +0000")
    mailbox.append("INBOX", update)
    assert p.run_once().counts["done"] == 1
    assert mailbox.subjects("Done") == ["Ticket 1 opened", "Ticket 1 updated"]
    assert [r["subject"] for r in p.records()] == ["Ticket 1 opened", "Ticket 1 updated"]

    # a copy of the update is a duplicate of the update, not of the first mail
    mailbox.append("INBOX", _again(update, 2))
    assert p.run_once().counts["duplicate"] == 1
    assert mailbox.subjects("Ignored") == ["Ticket 1 opened", "Ticket 1 updated"]
    assert len(p.records()) == 2

    entries = _ledger(p.root, capsys)
    done = {e["subject"]: e["key"] for e in entries if e["state"] == "done"}
    dups = [e for e in entries if e["state"] == "ignored"]
    assert [(e["subject"], e["dup_of"], e["settled"]) for e in dups] == [
        ("Ticket 1 opened", done["Ticket 1 opened"], True),
        ("Ticket 1 updated", done["Ticket 1 updated"], True)]
    assert "(same Message-ID and content, already done)" in dups[0]["reason"]


def test_same_message_id_different_mails_in_one_batch_are_all_processed(
        source_project, mailbox):
    # CPython's own email test messages reuse Message-IDs like this
    p = source_project.write(source={"folders": FOLDERS})
    mails = [_mail(f"message {i}", f"body {i}\n", mid="<15090.61304@aaa.zzz.org>")
             for i in range(3)]
    for raw in mails + [mails[1]]:      # and one true copy among them
        mailbox.append("INBOX", raw)
    summary = p.run_once()
    assert (summary.counts["done"], summary.counts["duplicate"]) == (3, 1)
    assert mailbox.subjects("Done") == ["message 0", "message 1", "message 2"]
    assert mailbox.subjects("Ignored") == ["message 1"]


def test_without_an_ignore_folder_a_duplicate_stays_in_the_input_folder(
        source_project, mailbox):
    p = source_project.write(source={"folders": {"input": "INBOX", "done": "Done"}})
    raw = _mail("once", "only once\n")
    mailbox.append("INBOX", raw)
    assert p.run_once().counts["done"] == 1
    mailbox.append("INBOX", _again(raw, 1))
    assert p.run_once().counts["duplicate"] == 1
    assert mailbox.subjects("INBOX") == ["once"]
    again = p.run_once().counts       # nothing new: the duplicate is not looked at again
    assert (again["done"], again["duplicate"]) == (0, 0)
