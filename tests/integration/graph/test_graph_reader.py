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


def test_paging_and_delta_pick_up_new_mail(reader, mail_stack, mailbox_user, graph):
    # (before issue 19 this said "only new mail": Graph's delta also reports changed and
    # replayed items, which the runner recognises by its ledger)
    for i in range(12):  # more than one page of the double (10)
        mail_stack.deliver(mailbox_user.email, make_mail(f"old {i}"))
    refs, cursor = reader.list_messages("inbox")
    assert len(refs) == 12 == len({r.id for r in refs})  # a page's last item came twice
    assert sum("$skiptoken=" in s.query for s in graph.requests) >= 2
    old = {r.id for r in refs}
    assert {r.id for r in reader.list_messages("inbox", cursor=cursor)[0]} <= old
    mail_stack.deliver(mailbox_user.email, make_mail("new one"))
    new, cursor2 = reader.list_messages("inbox", cursor=cursor)
    assert len([r for r in new if r.id not in old]) == 1
    assert cursor2 != cursor


def test_delta_reports_changes_and_removals_once_each(reader, mail_stack, mailbox_user,
                                                      tmp_path):
    for s in ("keep", "flag", "move"):
        mail_stack.deliver(mailbox_user.email, make_mail(s))
    refs, cursor = reader.list_messages("inbox")
    by = {next(reader.fetch([r], spool_dir=tmp_path)).data.split(b"Subject: ")[1][:4]: r
          for r in refs}
    _, cursor = reader.list_messages("inbox", cursor=cursor)   # past the replay
    reader.set_flags([by[b"flag"]], ["\\Seen"])
    reader.move([by[b"move"]], "Elsewhere")
    changed, cursor = reader.list_messages("inbox", cursor=cursor)
    assert [(r.id, r.flags) for r in changed] == [(by[b"flag"].id, ("\\Seen",))]
    assert reader.list_messages("inbox", cursor=cursor)[0] in ([], changed)  # a replay at most


def test_a_lost_sync_state_starts_the_round_over_once(reader, mail_stack, mailbox_user, graph):
    for i in range(12):
        mail_stack.deliver(mailbox_user.email, make_mail(f"m{i}"))
    _, cursor = reader.list_messages("inbox")
    graph.lose_sync_state(status=400)          # 400 syncStateNotFound, as for other resources
    refs, cursor2 = reader.list_messages("inbox", cursor=cursor)
    assert len(refs) == 12 and cursor2 != cursor
    assert [s.status for s in graph.requests if "/delta" in s.path].count(400) == 1
    # a 410 on the second page of a round: the whole round again, from the start
    graph.clear()
    graph.inject(410, match="$skiptoken", code="syncStateNotFound")
    refs, _ = reader.list_messages("inbox")
    assert len(refs) == 12
    assert [s.status for s in graph.requests if "/delta" in s.path].count(410) == 1
    graph.inject(410, times=2, match="/delta", code="syncStateNotFound")
    with pytest.raises(ConnectError, match="lost the sync state of folder 'inbox' twice") as e:
        reader.list_messages("inbox", cursor=cursor2)
    assert e.value.retriable


def test_no_deltatoken_latest_and_value_is_asked_for_as_any_type(reader, mail_stack,
                                                                  mailbox_user, graph, tmp_path):
    mail_stack.deliver(mailbox_user.email, make_mail("x"))
    assert reader.wait_for_changes("inbox", 0.1) in (True, False)
    refs, _ = reader.list_messages("inbox")
    assert len(list(reader.fetch(refs, spool_dir=tmp_path))) == 1
    assert not any("latest" in s.query for s in graph.requests)
    assert [s.accept for s in graph.requests if s.path.endswith("/$value")] == ["*/*"]


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
    # (then 200 twice since issue 19: the double's first page of a full round is empty)
    assert [s.status for s in graph.requests if "/delta" in s.path] == [429, 200, 200]


def test_a_fractional_retry_after_is_waited_for(reader, graph, caplog):
    graph.inject(429, retry_after=0.25, match="/mailFolders")   # "2.128" in Microsoft's sample
    reader.open_folder("inbox")
    assert "retrying in 0.2 s" in caplog.text or "retrying in 0.3 s" in caplog.text


def test_504_is_retried_on_reads_but_not_on_moves(reader, mail_stack, mailbox_user, graph):
    mail_stack.deliver(mailbox_user.email, make_mail("gw"))
    graph.inject(504, match="/mailFolders", method="GET")
    refs, _ = reader.list_messages("inbox")
    graph.inject(504, match="/move")
    with pytest.raises(ConnectError, match="HTTP 504"):
        reader.move(refs, "Done")


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
