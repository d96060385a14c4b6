"""The runner against the in-memory reader: commit order, folders, filters, failures."""

from __future__ import annotations

import threading

import pytest
from wf_support import Crash, mail, read_jsonl

from postline.errors import ConnectError
from postline.source.record import validate_record
from postline.source.schedule import FakeClock
from postline.state.ledger import SqliteLedger, ledger_path
from postline.workflow.commit import InlineCommitter
from postline.workflow.engine import build_runner, run_workflows
from postline.workflow.events import Events


def run(project, box, **kw):
    return run_workflows(project, once=True, reader_factory=lambda conn: box.reader(),
                         clock=FakeClock(), **kw)


def run_in_this_thread(project, box):
    """Like ``postline run --once`` but in the test's thread, so a Crash propagates."""
    ledger = ledger_of(project)
    try:
        [wf] = project.assets("Workflow")
        # commits inline, in this process, so that a patched ledger method is the one used
        runner = build_runner(project, wf, stop=threading.Event(), ledger=ledger,
                              reader_factory=lambda c: box.reader(), clock=FakeClock(),
                              committer_factory=InlineCommitter)
        runner.run(once=True)
    finally:
        ledger.close()


def ledger_of(project):
    return SqliteLedger(path=ledger_path(project.state_dir))


def test_ingest_moves_to_done_and_writes_valid_records(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done/Ärchiv"},
                                 "stream_name": "mail-${mail:folder}-${mail:subject}"})
    for i in range(3):
        box.add(mail(f"Grüße {i}", body=f"body {i}\n"))
    summary = run(project, box)
    assert summary.counts["done"] == 3 and not summary.errors
    records = read_jsonl(project.root / "out/mails.jsonl")
    assert [r["subject"] for r in records] == ["Grüße 0", "Grüße 1", "Grüße 2"]
    for r in records:
        validate_record(r)
        assert r["stream_name"] == f"mail-INBOX-{r['subject']}"
        assert r["received"] == "2024-05-01T12:00:00Z"
    assert box.folders["INBOX"] == {} and len(box.folders["Done/Ärchiv"]) == 3
    entries = ledger_of(project).entries("Src")
    assert [(e.state, e.settled) for e in entries] == [("done", True)] * 3


def test_second_run_does_nothing_when_mails_stay(project_at, box):
    project = project_at()   # no done folder: mails stay in INBOX
    box.add(mail("one"))
    run(project, box)
    summary = run(project, box)
    assert summary.mails == 0
    assert len(read_jsonl(project.root / "out/mails.jsonl")) == 1
    assert len(box.folders["INBOX"]) == 1


def test_filters_ignore_and_move_to_ignore_folder(project_at, box):
    project = project_at(source={
        "folders": {"input": "INBOX", "done": "Done", "ignore": "Ignored"},
        "filters": {"from": {"blacklist": ["spam@"]},
                    "subject": {"whitelist": ["(?i)invoice"]}}})
    box.add(mail("Invoice 1"))
    box.add(mail("Invoice 2", "spam@example.test"))
    box.add(mail("Hello"))
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["ignored"]) == (1, 2)
    assert len(box.folders["Done"]) == 1 and len(box.folders["Ignored"]) == 2
    reasons = {e.subject: e.reason for e in ledger_of(project).entries("Src", state="ignored")}
    assert "blacklist" in reasons["Invoice 2"] and "whitelist" in reasons["Hello"]


def test_processor_failure_rolls_back_to_error_folder(project_at, box, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "proc.py").write_text(
        "def on_message(message, ctx):\n"
        "    if 'bad' in message['subject']:\n"
        "        raise ValueError('cannot handle ' + message['subject'])\n"
        "    message['tag'] = ctx.workflow\n")
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done", "error": "Err"}},
                         workflow={"processor": "proc.py"})
    box.add(mail("good"))
    box.add(mail("bad one"))
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["failed"]) == (1, 1)
    assert len(box.folders["Err"]) == 1
    [failed] = ledger_of(project).entries("Src", state="failed")
    assert "processor: ValueError: cannot handle bad one" in failed.reason
    [rec] = read_jsonl(project.root / "out/mails.jsonl")
    assert rec["tag"] == "Flow"


def test_retry_then_success(project_at, box, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "proc.py").write_text(
        "calls = []\n"
        "def on_message(message, ctx):\n"
        "    calls.append(1)\n"
        "    if len(calls) < 3:\n"
        "        raise RuntimeError('flaky')\n")
    project = project_at(source={"failure": {"on_failure": "retry", "max_retries": 3,
                                             "min_backoff": 2, "max_backoff": 3}},
                         workflow={"processor": "proc.py"})
    box.add(mail("x"))
    clock = FakeClock()
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=clock)
    assert summary.counts["done"] == 1
    assert clock.waits[:2] == [2, 3]


def test_unparseable_mail_goes_to_error_folder(project_at, box, monkeypatch):
    project = project_at(source={"folders": {"input": "INBOX", "error": "Err"}})
    box.add(b"")  # nothing at all
    box.add(mail("fine"))
    import postline.source.parse as parse_mod

    def boom(*a, **k):
        raise RuntimeError("stdlib gave up")
    monkeypatch.setattr(parse_mod, "parse_stdlib", boom)
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["failed"]) == (1, 1)
    [failed] = ledger_of(project).entries("Src", state="failed")
    assert failed.reason.startswith("parse: mail cannot be parsed")
    assert len(box.folders["Err"]) == 1


def test_crash_after_ledger_done_moves_without_reprocessing(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}})
    for i in range(4):
        box.add(mail(f"m{i}"))
    box.fail("move", Crash())
    with pytest.raises(Crash):
        run_in_this_thread(project, box)
    assert len(box.folders["INBOX"]) == 4
    summary = run(project, box)
    assert summary.mails == 0          # nothing processed again, only moved
    assert len(box.folders["Done"]) == 4
    assert len(read_jsonl(project.root / "out/mails.jsonl")) == 4


def test_crash_before_ledger_done_reaches_sinks_once(project_at, box, monkeypatch):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}},
                         workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                                             {"type": "directory", "path": "out/dir"}]})
    for i in range(5):
        box.add(mail(f"m{i}"))
    from postline.state.ledger import SqliteLedger as L
    real = L.finish
    calls = {"n": 0}

    def crashing_finish(self, source, outcomes):
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash()
        return real(self, source, outcomes)
    monkeypatch.setattr(L, "finish", crashing_finish)
    with pytest.raises(Crash):
        run_in_this_thread(project, box)
    summary = run(project, box)
    assert summary.counts["done"] == 5
    records = read_jsonl(project.root / "out/mails.jsonl")
    assert sorted(r["subject"] for r in records) == [f"m{i}" for i in range(5)]
    assert len(list((project.root / "out/dir").glob("*.json"))) == 5
    assert len(list((project.root / "out/dir").glob("*.eml"))) == 5
    assert all(e.attempts == 2 for e in ledger_of(project).entries("Src"))


def test_connect_error_with_once_is_reported(project_at, box):
    project = project_at()
    box.fail("connect", ConnectError("connection refused by 127.0.0.1:1"))
    summary = run(project, box)
    assert "connection refused" in summary.errors["Flow"]


def test_reconnects_after_drop_and_stops_on_request(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}})
    box.add(mail("a"))
    box.fail("list_messages", ConnectError("server closed the connection"))
    stop = threading.Event()
    done = threading.Event()

    class Ev(Events):

        def mail(self, event):
            stop.set()
            done.set()
    summary = run_workflows(project, reader_factory=lambda c: box.reader(), clock=FakeClock(),
                            stop=stop, events=Ev())
    assert done.is_set() and summary.counts["done"] == 1 and box.connects == 2


def test_throttle_spreads_streams_over_the_window(project_at, box):
    project = project_at(source={"throttle": {"max_streams": 2, "per": "minute"}})
    for i in range(5):
        box.add(mail(f"t{i}"))
    clock = FakeClock()
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=clock)
    assert summary.counts["done"] == 5
    assert clock.waits == [60.0, 60.0]



def test_ignored_mails_do_not_use_up_the_throttle(project_at, box):
    project = project_at(source={"throttle": {"max_streams": 2, "per": "minute"},
                                 "filters": {"subject": {"blacklist": ["^skip"]}}})
    for subject in ("skip 1", "skip 2", "t1", "skip 3", "t2", "t3"):
        box.add(mail(subject))
    clock = FakeClock()
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=clock)
    assert (summary.counts["done"], summary.counts["ignored"]) == (3, 3)
    assert clock.waits == [60.0]    # three streams at two a minute: one wait

def test_failure_backoff_pauses_between_failing_mails(project_at, box, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "proc.py").write_text(
        "def on_message(message, ctx):\n    raise RuntimeError('down')\n")
    project = project_at(source={"backoff": {"min": 1, "max": 4, "reset_after_streams": 1}},
                         workflow={"processor": "proc.py"})
    for i in range(5):
        box.add(mail(f"f{i}"))
    clock = FakeClock()
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=clock)
    assert summary.counts["failed"] == 5
    assert clock.waits == [1, 2, 4, 4, 4]   # a pause after each failure


def test_interval_polling_rounds_with_fake_clock(project_at, box):
    box.idle = False
    project = project_at(source={"polling": {"interval": 30, "idle": False}})
    box.add(mail("first"))
    clock = FakeClock()
    stop = threading.Event()
    seen = []

    class Ev(Events):

        def mail(self, event):
            seen.append((event.subject, clock.now()))
            if len(seen) == 1:
                box.add(mail("second"))
            else:
                stop.set()
    run_workflows(project, reader_factory=lambda c: box.reader(), clock=clock, stop=stop,
                  events=Ev())
    assert [s for s, _ in seen] == ["first", "second"]
    assert seen[1][1] - seen[0][1] == 30   # the next round came one interval later



@pytest.mark.parametrize("polling, second_at", [
    ({"cron": "*/5 * * * *"}, 1_700_000_100),              # 22:13:20 -> 22:15:00
    ({"cron": "*/5 * * * *", "idle": True}, 1_700_000_000),  # IDLE wakes it at once
])
def test_cron_polling_keeps_to_the_schedule_unless_idle_is_asked_for(project_at, box,
                                                                     polling, second_at):
    project = project_at(source={"polling": polling})
    box.add(mail("first"))
    clock = FakeClock(start=1_700_000_000)
    stop = threading.Event()
    seen = []

    class Ev(Events):

        def mail(self, event):
            seen.append((event.subject, clock.now()))
            if len(seen) == 1:
                box.add(mail("second"))
            else:
                stop.set()
    run_workflows(project, reader_factory=lambda c: box.reader(), clock=clock, stop=stop,
                  events=Ev())
    assert seen == [("first", 1_700_000_000), ("second", second_at)]

def test_duplicate_by_message_id_is_not_processed_again(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}})
    raw = mail("same", message_id="<same@example.test>")
    box.add(raw)
    run(project, box)
    box.add(raw)     # the user moves it back into the input folder: a new UID
    summary = run(project, box)
    assert summary.counts["duplicate"] == 1
    assert len(read_jsonl(project.root / "out/mails.jsonl")) == 1
    [dup] = ledger_of(project).entries("Src", state="ignored")
    assert dup.dup_of and "duplicate of" in dup.reason
    ledger_of(project).reset("Src", [dup.dup_of])      # the operator resets the original
    assert run(project, box).counts["done"] == 1


# A duplicate must agree in Message-ID and content (issue 13): an edited mail with the
# same Message-ID is another mail, processed in every mode.
@pytest.mark.parametrize("mode, again_same, again_changed", [
    ("manual", "duplicate", "done"),
    ("reset_on_reappear", "done", "done"),
    ("reprocess_on_change", "duplicate", "done"),
])
def test_reprocess_modes_decide_what_a_mail_moved_back_becomes(project_at, box, mode,
                                                               again_same, again_changed):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"},
                                 "reprocess": mode})
    mid = "<again@example.test>"
    box.add(mail("again", body="first\n", message_id=mid))
    assert run(project, box).counts["done"] == 1
    box.add(mail("again", body="first\n", message_id=mid))      # moved back unchanged
    assert run(project, box).counts[again_same] == 1
    box.add(mail("again", body="edited\n", message_id=mid))     # moved back, edited
    assert run(project, box).counts[again_changed] == 1
    delivered = 1 + [again_same, again_changed].count("done")
    assert len(read_jsonl(project.root / "out/mails.jsonl")) == delivered
    done = ledger_of(project).entries("Src", state="done")
    assert len(done) == delivered
    if mode == "reprocess_on_change":
        # compared with the version processed last, not the first one
        box.add(mail("again", body="edited\n", message_id=mid))
        assert run(project, box).counts["duplicate"] == 1


def test_two_copies_in_one_batch_are_delivered_once(project_at, box):
    # the same mail twice in the input folder (copied, or delivered twice): the second copy
    # is a duplicate of the first even though the first is not committed yet
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}})
    raw = mail("twice", message_id="<twice@example.test>")
    box.add(raw)
    box.add(mail("other"))
    box.add(raw)
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["duplicate"]) == (2, 1)
    assert [r["subject"] for r in read_jsonl(project.root / "out/mails.jsonl")] == \
        ["twice", "other"]
    [dup] = ledger_of(project).entries("Src", state="ignored")
    assert dup.dup_of.endswith("/1") and "duplicate of" in dup.reason


def test_duplicates_are_found_in_a_ledger_of_many_done_mails(project_at, box):
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"},
                                 "batch_size": 7})
    for i in range(40):
        box.add(mail(f"m{i}", message_id=f"<m{i}@example.test>"))
    assert run(project, box).counts["done"] == 40
    for i in (3, 17, 39):   # moved back: new UIDs, the same Message-IDs
        box.add(mail(f"m{i}", message_id=f"<m{i}@example.test>"))
    box.add(mail("new one"))
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["duplicate"]) == (1, 3)


def test_no_scratch_files_are_left_behind(project_at, box):
    project = project_at(source={"attachments": {"load": True,
                                                 "whitelist": [{"type": "text/csv"}]},
                                 "filters": {"subject": {"blacklist": ["^skip"]}}},
                         workflow={"attachments_dir": "out/files"})
    csv = [("a.csv", "text/csv", b"a,b\n1,2\n")]
    box.add(mail("keep", attachments=csv + [("x.bin", "application/octet-stream", b"x")]))
    box.add(mail("skip me", attachments=csv))
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["ignored"]) == (1, 1)
    [rec] = read_jsonl(project.root / "out/mails.jsonl")
    stored = [a for a in rec["attachments"] if a["stored"]]
    assert [a["filename"] for a in stored] == ["a.csv"]
    assert open(stored[0]["path"], "rb").read() == b"a,b\n1,2\n"
    work = project.state_dir / "work"
    assert [p for p in work.rglob("*") if p.is_file()] == []


def test_batches_end_at_their_size_or_their_bytes():
    from postline.protocols.base import MessageRef
    from postline.workflow.batch import split_batches

    refs = [MessageRef(folder="INBOX", folder_version="1", id=str(i), size=s)
            for i, s in enumerate([10, 10, 10, 10, 10, 50, 10, None])]
    assert [len(b) for b in split_batches(refs, 3, max_bytes=100_000)] == [3, 3, 2]
    assert [len(b) for b in split_batches(refs, 100, max_bytes=60)] == [5, 2, 1]
    assert split_batches([], 5) == []


def test_stored_attachments_are_made_durable_before_the_ledger_says_done(
        project_at, box, monkeypatch):
    from postline.workflow import commit

    project = project_at(source={"attachments": {"load": True}},
                         workflow={"attachments_dir": "out/files"})
    box.add(mail("with file", attachments=[("a.pdf", "application/pdf", b"%PDF-1.4 x")]))
    box.add(mail("without"))
    seen = []
    real = commit.run_job

    def spy(job, ledger):
        synced = [p.rsplit("/", 1)[-1] for p in job.files]
        if job.outcomes:
            seen.append((synced, {e.state for e in ledger_of(project).entries("Src")}))
        return real(job, ledger)
    monkeypatch.setattr(commit, "run_job", spy)
    run_in_this_thread(project, box)
    assert seen == [(["00-a.pdf", "mails.jsonl"], {"acquired"})]
    assert ledger_of(project).counts("Src")["done"] == 2


def test_commit_helper_that_dies_is_replaced_and_nothing_is_lost_or_repeated(
        project_at, box, monkeypatch, caplog):
    from postline.workflow import commit

    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"},
                                 "batch_size": 3})
    for i in range(10):
        box.add(mail(f"m{i}"))
    real_submit = commit.ProcessCommitter.submit
    count = {"n": 0}

    def submit_then_die(self, job):
        pending = real_submit(self, job)
        count["n"] += 1
        if count["n"] == 2:
            self._proc.kill()     # the helper is killed while commits are in flight
        return pending
    monkeypatch.setattr(commit.ProcessCommitter, "submit", submit_then_die)
    summary = run(project, box)
    assert not summary.errors and summary.counts["done"] == 10
    assert "the commit helper stopped" in caplog.text
    records = read_jsonl(project.root / "out/mails.jsonl")
    assert sorted(r["subject"] for r in records) == sorted(f"m{i}" for i in range(10))
    assert box.folders["INBOX"] == {} and len(box.folders["Done"]) == 10
    assert {e.state for e in ledger_of(project).entries("Src")} == {"done"}


def test_a_commit_helper_that_cannot_start_leaves_the_commits_to_the_runner(
        project_at, box, monkeypatch, caplog):
    from postline.workflow import commit

    monkeypatch.setattr(commit.sys, "executable", "/bin/false")   # starts, ends at once
    project = project_at(source={"folders": {"input": "INBOX", "done": "Done"}})
    for i in range(4):
        box.add(mail(f"m{i}"))
    summary = run(project, box)
    assert not summary.errors and summary.counts["done"] == 4
    assert "the commit helper stopped" in caplog.text
    assert len(read_jsonl(project.root / "out/mails.jsonl")) == 4


def test_a_workflow_that_ends_early_leaves_shared_services_open_for_the_others(
        project_at, box, tmp_path):
    class SharedService:   # what open_service gives: one per project and name
        closed = False
        sent = 0

        def SendAndForget(self, message):
            if self.closed:
                raise RuntimeError("EmailService N is closed")
            self.sent += 1

        def close(self):
            self.closed = True

    svc = SharedService()
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "proc.py").write_text(
        "import time\n"
        "def on_message(message, ctx):\n"
        "    if ctx.workflow == 'Flow2':\n"
        "        time.sleep(0.02)\n"
        "    ctx.services.N.SendAndForget({'Subject': message['subject']})\n")
    project = project_at(workflow={"processor": "proc.py", "services": {"N": "N"}}, extra=[
        {"kind": "EmailConnection", "name": "Out",
         "outgoing": {"protocol": "smtp", "host": "127.0.0.1", "port": 1, "security": "none",
                      "user": "u@example.test", "credential": {"type": "none"}}},
        {"kind": "EmailService", "name": "N", "connection": "Out"},
        {"kind": "EmailSource", "name": "Src2", "connection": "Box",
         "folders": {"input": "B"}, "batch_size": 1},
        {"kind": "Workflow", "name": "Flow2", "source": "Src2", "processor": "proc.py",
         "services": {"N": "N"}, "sinks": [{"type": "jsonl", "path": "out/b.jsonl"}]}])
    box.add(mail("a0"))
    for i in range(10):
        box.add(mail(f"b{i}"), folder="B")
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=FakeClock(), service_opener=lambda asset: svc)
    assert (summary.counts["done"], summary.counts["failed"]) == (11, 0)
    assert svc.sent == 11 and svc.closed      # closed once both workflows had ended


def test_a_round_ends_at_the_polling_timeout_and_the_rest_waits_for_the_next(
        project_at, box, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "proc.py").write_text(
        "def on_message(message, ctx):\n    raise RuntimeError('down')\n")
    project = project_at(source={"polling": {"interval": 5, "timeout": 6}, "batch_size": 1,
                                 "folders": {"input": "INBOX", "error": "Err"},
                                 "backoff": {"min": 4, "max": 100}},
                         workflow={"processor": "proc.py"})
    for i in range(4):
        box.add(mail(f"m{i}"))
    clock = FakeClock()
    # each failure pauses (4 s, then 8 s): the round passes its 6 s after the second mail
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=clock)
    assert summary.counts["failed"] == 2 and len(box.folders["INBOX"]) == 2
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=clock)
    assert summary.counts["failed"] == 2 and box.folders["INBOX"] == {}
