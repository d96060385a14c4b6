"""``postline try`` against the real Dovecot and Postfix: ``--peek`` leaves the mailbox
exactly as it was (every folder's UIDs, flags and sizes compared before and after, over
IMAP and POP3), and the services' sends are shown, not sent (unless ``--send``)."""

from __future__ import annotations

import json
import poplib
import smtplib
import ssl

import pytest
from srchelpers import deliver_many, make_mail, wait_until

from postline.cli import main
from postline.testing.info import MailUser

pytestmark = pytest.mark.stack

PROCESSOR = """\
def on_message(message, ctx):
    if message["subject"].startswith("boom"):
        raise ValueError("no " + message["subject"])
    message["seen_by"] = "try"
"""


def snapshot(mailbox) -> dict[str, dict[int, tuple]]:
    """Every folder: UID -> (flags, size, subject), read with EXAMINE (changes nothing)."""
    c = mailbox.client()
    try:
        out = {}
        for _, _, name in c.list_folders():
            c.select_folder(name, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["FLAGS", "RFC822.SIZE", "ENVELOPE"]) if uids else {}
            out[name] = {uid: (tuple(sorted(d[b"FLAGS"])), d[b"RFC822.SIZE"],
                               d[b"ENVELOPE"].subject) for uid, d in data.items()}
        return out
    finally:
        c.logout()


@pytest.fixture
def filled(mailbox, mail_stack, mailbox_user):
    """Three mails in the INBOX: one flagged, one read, one new; \\Recent already taken by
    a SELECT (a session flag: the first session to select a folder takes it)."""
    deliver_many(mail_stack, mailbox_user.email,
                 [make_mail(1, "alpha"), make_mail(2, "boom beta"), make_mail(3, "spam gamma")])
    c = mailbox.client()
    try:
        c.select_folder("INBOX")
        uids = sorted(c.search("ALL"))
        c.add_flags(uids[0], [b"\\Flagged"])
        c.add_flags(uids[1], [b"\\Seen"])
    finally:
        c.logout()
    return mailbox


@pytest.fixture(autouse=True)
def password_in_env(source_project, monkeypatch):
    """The CLI reads the project's Secret (env:IT_PASSWORD) from the environment."""
    for name, value in source_project.environ.items():
        monkeypatch.setenv(name, value)


SOURCE = {"folders": {"input": "INBOX", "done": "Done", "error": "Errors",
                      "ignore": "Ignored"},
          "filters": {"subject": {"blacklist": ["^spam"]}}}


def test_peek_over_imap_leaves_the_mailbox_as_it_was(filled, source_project, capsys):
    (source_project.root / "proc.py").parent.mkdir(parents=True, exist_ok=True)
    (source_project.root / "proc.py").write_text(PROCESSOR)
    source_project.write(source=SOURCE, workflow={"processor": "proc.py"})
    before = snapshot(filled)
    assert main(["try", str(source_project.root), "Flow", "--peek", "3", "--json"]) == 1
    after = snapshot(filled)
    assert after == before
    assert not {"Done", "Errors", "Ignored"} & set(after)   # no folder made, no mail moved
    flags = sorted(v[0] for v in after["INBOX"].values())
    assert flags == [(), (b"\\Flagged",), (b"\\Seen",)]
    results = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["subject"], r["outcome"], r["folder"]) for r in results] == [
        ("alpha", "done", "Done"), ("boom beta", "failed", "Errors"),
        ("spam gamma", "ignored", "Ignored")]
    assert results[0]["record"]["seen_by"] == "try"
    assert results[1]["reason"].startswith("processor: ValueError: no boom beta (at ")
    assert results[0]["key"].startswith("Box/INBOX/")
    assert not (source_project.root / ".postline-state" / "ledger.sqlite").exists()
    assert not (source_project.root / "out").exists()


def test_peek_takes_the_newest(filled, source_project, capsys):
    source_project.write(source=SOURCE)
    assert main(["try", str(source_project.root), "Flow", "--peek", "1"]) == 0
    out = capsys.readouterr().out
    assert ": ignored (-> Ignored)" in out and "spam gamma" in out and "alpha" not in out


def test_peek_over_pop3_leaves_the_mailbox_as_it_was(filled, source_project, mail_stack,
                                                     mailbox_user, capsys):
    source_project.write(protocol="pop3", source={"pop3": {"done": "delete"}})
    before = snapshot(filled)
    assert main(["try", str(source_project.root), "Flow", "--peek", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count(": done (deleted from the server)") == 3
    assert snapshot(filled) == before
    # the comparison would see a RETR: Dovecot marks what was RETRieved read at QUIT
    pop = poplib.POP3(mail_stack.host, mail_stack.ports["pop3"], timeout=10)
    pop.user(mailbox_user.email)
    pop.pass_(mailbox_user.password)
    pop.retr(1)
    pop.quit()
    assert snapshot(filled) != before


def test_sends_are_shown_not_sent_unless_asked(source_project, mailbox, mail_stack,
                                               mailbox_user, tmp_path, capsys):
    ops = MailUser.fresh("ops")
    (source_project.root).mkdir(parents=True, exist_ok=True)
    (source_project.root / "proc.py").write_text(
        "def on_message(message, ctx):\n"  # noqa: UP031 (Python source full of braces)
        "    ctx.services.Notify.Send({'To': [{'Address': %r, 'PersonalName': 'Ops'}],\n"
        "                              'Subject': 'about ' + message['subject'],\n"
        "                              'Body': 'seen'})\n" % ops.email)
    out_conn = {"kind": "EmailConnection", "name": "Out",
                "outgoing": {"protocol": "smtp", "host": mail_stack.host,
                             "port": mail_stack.ports["smtp"], "security": "starttls",
                             "ca_file": str(mail_stack.ca_file), "user": mailbox_user.email,
                             "credential": {"type": "secret", "secret": "Creds.password"}}}
    service = {"kind": "EmailService", "name": "Notify", "connection": "Out",
               "default_from": mailbox_user.email}
    source_project.write(workflow={"processor": "proc.py", "services": {"Notify": "Notify"}},
                         extra=[out_conn, service])
    sample = tmp_path / "sample.eml"
    sample.write_bytes(make_mail(7, "invoice 7"))
    argv = ["try", str(source_project.root), "Flow", str(sample)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"  sends:       Notify.Send to Ops <{ops.email}>: 'about invoice 7' "
            "(not sent)") in out
    # nothing went to Postfix: a mail sent after it arrives alone
    context = ssl.create_default_context(cafile=str(mail_stack.ca_file))
    with smtplib.SMTP(mail_stack.host, mail_stack.ports["smtp"], timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.login(mailbox_user.email, mailbox_user.password)
        smtp.sendmail(mailbox_user.email, [ops.email],
                      make_mail(8, "marker", sender=mailbox_user.email))
    wait_until(lambda: mail_stack.subjects(ops.email), what="the marker mail")
    assert mail_stack.subjects(ops.email) == ["marker"]
    assert not (source_project.root / ".postline-state" / "outbox.sqlite").exists()

    assert main([*argv, "--send"]) == 0
    assert "'about invoice 7' (sent)" in capsys.readouterr().out
    wait_until(lambda: len(mail_stack.subjects(ops.email)) == 2, what="the sent mail")
    assert mail_stack.subjects(ops.email) == ["about invoice 7", "marker"]
    assert mailbox.count("INBOX") == 0        # trying never read the source's mailbox
