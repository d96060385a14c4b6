"""GraphReader against the Graph test double backed by the stack's Dovecot."""

from __future__ import annotations

import time

import pytest
from graph_helpers import make_mail

from postline.errors import ConfigError, ConnectError, TokenError

pytestmark = pytest.mark.stack


def imap_subjects(stack, user, folder: str) -> list[str]:
    return stack.subjects(user.email, folder)


def test_lists_well_known_folders_and_opens_inbox(reader, mail_stack, mailbox_user):
    mail_stack.deliver(mailbox_user.email, make_mail("one"))
    names = {f.name for f in reader.list_folders()}
    assert {"Inbox", "Sent Items", "Deleted Items", "Junk Email", "Drafts", "Archive"} <= names
    state = reader.open_folder("INBOX")
    assert state.exists == 1
    assert state.folder_version == reader.folder_id("inbox")


def test_list_fetch_in_order_without_marking_read(reader, mail_stack, mailbox_user, tmp_path):
    for i in range(3):
        mail_stack.deliver(mailbox_user.email, make_mail(f"mail {i}", body=f"body {i}\n"))
    refs, cursor = reader.list_messages("inbox")
    assert len(refs) == 3 and cursor and "$deltatoken=" in cursor
    got = list(reader.fetch(refs, spool_dir=tmp_path))
    assert [r.data.count(b"Subject: mail ") for r in got] == [1, 1, 1]
    assert [b"body %d" % i in r.data for i, r in enumerate(got)] == [True] * 3
    assert all("\\Seen" not in r.flags for r in reader.list_messages("inbox")[0])


def test_paging_and_delta_pick_up_only_new_mail(reader, mail_stack, mailbox_user, graph):
    for i in range(12):  # more than one page of the double (10)
        mail_stack.deliver(mailbox_user.email, make_mail(f"old {i}"))
    refs, cursor = reader.list_messages("inbox")
    assert len(refs) == 12
    assert any("$skiptoken=" in s.path or s.method == "GET" for s in graph.requests)
    assert reader.list_messages("inbox", cursor=cursor)[0] == []
    mail_stack.deliver(mailbox_user.email, make_mail("new one"))
    new, cursor2 = reader.list_messages("inbox", cursor=cursor)
    assert len(new) == 1 and new[0].id not in {r.id for r in refs}
    assert cursor2 != cursor


def test_move_keeps_the_immutable_id_and_creates_the_target(reader, mail_stack, mailbox_user,
                                                             tmp_path):
    mail_stack.deliver(mailbox_user.email, make_mail("to move"))
    mail_stack.deliver(mailbox_user.email, make_mail("to stay"))
    refs, _ = reader.list_messages("inbox")
    moving = [r for r in refs if b"to move" in next(reader.fetch([r], spool_dir=tmp_path)).data]
    reader.move(moving, "Archive/Done")
    assert imap_subjects(mail_stack, mailbox_user, "Archive/Done") == ["to move"]
    assert imap_subjects(mail_stack, mailbox_user, "INBOX") == ["to stay"]
    done, _ = reader.list_messages("Archive/Done")
    assert [r.id for r in done] == [moving[0].id]          # immutable id survived the move
    assert done[0].folder_version == reader.folder_id("archive/done")
    # the old ref still finds the mail: Graph looks messages up by id, not by folder
    assert b"to move" in next(iter(reader.fetch(moving, spool_dir=tmp_path))).data


def test_copy_delete_and_flags(reader, mail_stack, mailbox_user, tmp_path):
    mail_stack.deliver(mailbox_user.email, make_mail("a"))
    mail_stack.deliver(mailbox_user.email, make_mail("b"))
    refs, _ = reader.list_messages("inbox")
    reader.copy(refs[:1], "Kept")
    reader.set_flags(refs[1:], ["\\Seen", "\\Flagged"])
    reader.delete(refs[:1])
    assert imap_subjects(mail_stack, mailbox_user, "Kept") == ["a"]
    assert imap_subjects(mail_stack, mailbox_user, "INBOX") == ["b"]
    assert imap_subjects(mail_stack, mailbox_user, "Trash") == []   # permanent, not Deleted Items
    assert list(reader.fetch(refs[:1], spool_dir=tmp_path)) == []   # vanished: skipped
    left, _ = reader.list_messages("inbox")
    assert left[0].flags == ("\\Seen", "\\Flagged")
    reader.set_flags(left, ["\\Seen"], add=False)
    assert reader.list_messages("inbox")[0][0].flags == ("\\Flagged",)


def test_large_message_is_spooled(reader, mail_stack, mailbox_user, tmp_path):
    big = make_mail("big", attachment=b"\x00\x01" * 3_700_000)   # ~10 MB of MIME
    mail_stack.deliver(mailbox_user.email, big)
    mail_stack.deliver(mailbox_user.email, make_mail("small"))
    refs, _ = reader.list_messages("inbox")
    got = list(reader.fetch(refs, spool_dir=tmp_path / "spool", inline_limit=1024 * 1024))
    assert got[0].path is not None and got[0].data is None
    spooled = got[0].path.read_bytes()
    assert got[0].size == len(spooled) > 10_000_000
    assert big.replace(b"\n", b"\r\n") in spooled   # Dovecot stores CRLF, adds Received:
    assert got[1].data is not None and got[1].path is None
    got[0].discard()
    assert not any((tmp_path / "spool").iterdir())


def test_throttling_retry_after_is_honoured(reader, mail_stack, mailbox_user, graph):
    mail_stack.deliver(mailbox_user.email, make_mail("slow"))
    graph.inject(429, retry_after=1, match="/delta")
    started = time.monotonic()
    refs, _ = reader.list_messages("inbox")
    assert len(refs) == 1
    assert time.monotonic() - started >= 1.0
    assert [s.status for s in graph.requests if "/delta" in s.path] == [429, 200]


def test_503_then_success_and_bounded_retries(reader, mail_stack, mailbox_user, graph):
    graph.inject(503, times=1, match="/mailFolders")
    assert reader.open_folder("inbox").exists == 0
    graph.inject(429, times=10, match="/mailFolders", retry_after=0)
    with pytest.raises(ConnectError, match="kept throttling") as err:
        reader.open_folder("inbox")
    assert err.value.retriable


def test_token_rejected_twice_is_a_token_error(reader, graph):
    graph.inject(401, times=2)
    with pytest.raises(TokenError, match="rejected the access token"):
        reader.list_folders()


def test_unknown_folder_is_a_config_error(reader):
    with pytest.raises(ConfigError, match="has no folder 'Nope/There'"):
        reader.open_folder("Nope/There")


def test_wait_for_changes_polls_delta(reader, mail_stack, mailbox_user):
    assert reader.wait_for_changes("inbox", 0.2) is False
    mail_stack.deliver(mailbox_user.email, make_mail("wake up"))
    assert reader.wait_for_changes("inbox", 5) is True


def test_at_most_four_requests_per_mailbox(reader, mail_stack, mailbox_user, graph):
    for i in range(10):
        mail_stack.deliver(mailbox_user.email, make_mail(f"m{i}"))
    refs, _ = reader.list_messages("inbox")
    graph.clear()
    reader.move(refs, "Done")
    assert len([s for s in graph.requests if s.path.endswith("/move")]) == 10
    assert 1 < graph.max_in_flight <= 4
