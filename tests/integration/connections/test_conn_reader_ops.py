"""MailboxReader operations against the stack's Dovecot (IMAP and POP3)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from connhelpers import endpoint_data
from imapclient import IMAPClient

from postline.errors import ConfigError
from postline.protocols import open_reader
from postline.protocols.base import Capabilities
from postline.testing.waits import poll

pytestmark = pytest.mark.stack


def _mail(subject: str, body: bytes = b"hello\r\n") -> bytes:
    return f"From: a@example.test\r\nSubject: {subject}\r\n\r\n".encode() + body


@pytest.fixture
def imap(project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    project.add({"name": "Box", "incoming": endpoint_data(
        mail_stack, protocol="imap", security="tls", credential="secret",
        user=mailbox_user.email)})
    with open_reader(project, "Box") as reader:
        yield reader


@pytest.fixture
def pop3(project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    project.add({"name": "Pop", "incoming": endpoint_data(
        mail_stack, protocol="pop3", security="tls", credential="secret",
        user=mailbox_user.email)})
    with open_reader(project, "Pop") as reader:
        yield reader


def _subjects(reader, folder, tmp_path):
    refs, _ = reader.list_messages(folder)
    return [m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
            for m in reader.fetch(refs, spool_dir=tmp_path)]


def test_open_and_list_with_cursor(imap, mail_stack, mailbox_user, tmp_path):
    for i in range(3):
        mail_stack.deliver(mailbox_user.email, _mail(f"m{i}"))
    state = imap.open_folder("INBOX")
    assert state.exists == 3 and state.folder_version.isdigit() and state.next_id == "4"
    refs, cursor = imap.list_messages("INBOX")
    assert [r.id for r in refs] == ["1", "2", "3"] and cursor == "3"
    assert all(r.size and r.internal_date for r in refs)
    # nothing newer: "UID 4:*" still matches the last message; it must not come back
    assert imap.list_messages("INBOX", cursor=cursor) == ([], "3")
    mail_stack.deliver(mailbox_user.email, _mail("m3"))
    refs, cursor = imap.list_messages("INBOX", cursor=cursor)
    assert [r.id for r in refs] == ["4"] and cursor == "4"
    # fetching does not mark as read (BODY.PEEK)
    list(imap.fetch(refs, spool_dir=tmp_path))
    again, _ = imap.list_messages("INBOX", cursor="3")
    assert "\\Seen" not in again[0].flags


def test_large_message_is_spooled_to_a_file(imap, mail_stack, mailbox_user, tmp_path):
    line = b"0123456789abcdef" * 4 + b"\r\n"
    body = line * (20 * 1024 * 1024 // len(line))
    mail_stack.deliver(mailbox_user.email, _mail("big", body))
    mail_stack.deliver(mailbox_user.email, _mail("small"))
    refs, _ = imap.list_messages("INBOX")
    got = list(imap.fetch(refs, spool_dir=tmp_path / "spool", inline_limit=1024 * 1024))
    big, small = got
    assert big.data is None and big.path.parent == tmp_path / "spool"
    assert big.size == refs[0].size > 20_000_000
    assert big.path.stat().st_mode & 0o777 == 0o600
    with big.open() as f:
        assert f.read().endswith(body)
    assert small.data is not None and small.path is None
    big.discard()
    assert not big.path.exists()


def test_move_copy_delete_flags_and_new_folders(imap, mail_stack, mailbox_user, tmp_path):
    for s in ("a", "b", "c", "d"):
        mail_stack.deliver(mailbox_user.email, _mail(s))
    refs, _ = imap.list_messages("INBOX")
    target = "Processed/2026/Größe ✓"
    imap.move(refs[:1], target)                        # created on demand, nested, non-ASCII
    assert target in [f.name for f in imap.list_folders()]
    imap.copy(refs[1:2], "Copies")
    imap.set_flags(refs[2:3], ["\\Seen"])
    imap.delete(refs[3:4])
    assert _subjects(imap, target, tmp_path) == ["a"]
    assert _subjects(imap, "Copies", tmp_path) == ["b"]
    left, _ = imap.list_messages("INBOX")
    assert [r.id for r in left] == ["2", "3"]
    assert "\\Seen" in left[1].flags
    imap.set_flags(left[1:], ["\\Seen"], add=False)
    assert "\\Seen" not in imap.list_messages("INBOX")[0][1].flags


def test_move_without_move_capability_uses_copy_and_uid_expunge(imap, mail_stack, mailbox_user,
                                                                 tmp_path):
    for s in ("keep", "go"):
        mail_stack.deliver(mailbox_user.email, _mail(s))
    imap.capabilities = Capabilities(move=False, idle=True, raw=imap.capabilities.raw)
    refs, _ = imap.list_messages("INBOX")
    imap.move(refs[1:], "Done")
    assert _subjects(imap, "Done", tmp_path) == ["go"]
    assert _subjects(imap, "INBOX", tmp_path) == ["keep"]


def test_idle_wakes_up_on_new_mail(imap, mail_stack, mailbox_user):
    imap.open_folder("INBOX")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(
        imap.wait_for_changes("INBOX", timeout=20)))
    started = time.monotonic()
    waiter.start()
    # APPEND from a second session once the first one is idling
    with IMAPClient(mail_stack.host, port=mail_stack.ports["imaps"],
                    ssl_context=mail_stack.ssl_context()) as other:
        other.login(mailbox_user.email, mailbox_user.password)
        poll(lambda: imap._client._idle_tag is not None, timeout=10, interval=0.01)
        other.append("INBOX", _mail("pushed"))
    waiter.join(timeout=20)
    assert result == [True]
    assert time.monotonic() - started < 10
    refs, _ = imap.list_messages("INBOX")
    assert len(refs) == 1


def test_idle_times_out_without_mail(imap):
    imap.open_folder("INBOX")
    started = time.monotonic()
    assert imap.wait_for_changes("INBOX", timeout=0.5) is False
    assert 0.4 < time.monotonic() - started < 5


def test_pop3_uidl_retr_dele(pop3, mail_stack, mailbox_user, tmp_path):
    line = b"x" * 3000 + b"\r\n"        # longer than poplib's 2048-byte line limit
    mail_stack.deliver(mailbox_user.email, _mail("first", line * 400))
    mail_stack.deliver(mailbox_user.email, _mail("second"))
    pop3.close()      # a POP3 session sees the maildrop as it was at login
    pop3.connect()
    assert [f.name for f in pop3.list_folders()] == ["INBOX"]
    assert pop3.open_folder("INBOX").exists == 2
    refs, _ = pop3.list_messages("INBOX")
    assert len({r.id for r in refs}) == 2 and all(r.size for r in refs)
    got = list(pop3.fetch(refs, spool_dir=tmp_path, inline_limit=100_000))
    assert got[0].path is not None and got[0].data is None
    assert got[0].open().read().endswith(line * 400)
    assert b"Subject: second" in got[1].data
    pop3.delete(refs[:1])
    left, _ = pop3.list_messages("INBOX")
    assert [r.id for r in left] == [refs[1].id]


def test_pop3_has_no_folders(pop3):
    with pytest.raises(ConfigError, match="POP3 has no folders: cannot move mail to 'Done'"):
        pop3.move([], "Done")
    with pytest.raises(ConfigError, match="POP3 has only the folder INBOX"):
        pop3.list_messages("Archive")
    assert pop3.capabilities.folders is False


def test_pop3_sees_mail_that_arrived_after_login(pop3, mail_stack, mailbox_user):
    assert pop3.list_messages("INBOX")[0] == []
    mail_stack.deliver(mailbox_user.email, _mail(f"late {uuid.uuid4().hex}"))
    assert len(pop3.list_messages("INBOX")[0]) == 1


def test_idle_is_renewed_and_still_times_out(imap):
    imap._idle_renew = 0.2   # RFC 2177 wants < 29 min; shortened to see several renewals
    imap.open_folder("INBOX")
    started = time.monotonic()
    assert imap.wait_for_changes("INBOX", timeout=0.7) is False
    assert time.monotonic() - started < 5
    assert imap.list_messages("INBOX") == ([], None)  # the session is usable afterwards


def test_noop_polling_without_idle(imap, mail_stack, mailbox_user):
    imap.capabilities = Capabilities(move=True, idle=False, raw=imap.capabilities.raw)
    imap._noop_poll = 0.05
    imap.open_folder("INBOX")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(
        imap.wait_for_changes("INBOX", timeout=15)))
    waiter.start()
    mail_stack.deliver(mailbox_user.email, _mail("polled"))
    waiter.join(timeout=20)
    assert result == [True]
