"""Files on a shared host: state and sink output private whatever the umask, a sink `mode`
for group access, links planted in a directory sink refused (never followed), and a mail
that fails leaves nothing in the directory sink (issue 15, items 6, 7 and 8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from wf_support import mail, read_jsonl

import postline
from postline.files import SafeDir, make_dirs, private_sqlite
from postline.source.record import file_key
from postline.source.schedule import FakeClock
from postline.state.ledger import SqliteLedger, ledger_path
from postline.state.outbox import Outbox
from postline.workflow.engine import run_workflows

PDF = b"%PDF-1.4\n" + b"7" * 2000
KEY = "Box/INBOX/1000/1"          # the first mail of the fake mailbox
STEM = file_key(KEY)


def run(project, box):
    return run_workflows(project, once=True, reader_factory=lambda conn: box.reader(),
                         clock=FakeClock())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask():
    """umask 000: whatever postline creates would be 0666/0777 if it relied on the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def sinks(mode: str | None = None) -> list[dict]:
    extra = {"mode": mode} if mode else {}
    return [{"type": "directory", "path": "out/mails", **extra},
            {"type": "jsonl", "path": "out/feed/mails.jsonl", **extra}]


def ledger_entry(project):
    led = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        [entry] = led.entries("Src")
        return entry
    finally:
        led.close()


def test_state_and_sink_output_are_private_whatever_the_umask(project_at, box, loose_umask):
    project = project_at(source={"attachments": {"load": True}},
                         workflow={"sinks": sinks()})
    box.add(mail("Invoice", attachments=[("a.pdf", "application/pdf", PDF)]))
    assert run(project, box).counts["done"] == 1
    state = project.state_dir
    assert mode_of(state) == 0o700
    for name in ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"):
        if (state / name).exists():
            assert mode_of(state / name) == 0o600, name
    for p in state.rglob("*"):
        assert mode_of(p) & 0o077 == 0, p
    out = project.root / "out"
    [rec] = read_jsonl(out / "feed/mails.jsonl")
    att = Path(rec["attachments"][0]["path"])
    assert att.parent == out / "mails" / f"{STEM}.attachments" and att.read_bytes() == PDF
    for f in (out / "mails" / f"{STEM}.json", out / "mails" / f"{STEM}.eml", att,
              out / "feed/mails.jsonl", out / "feed/mails.jsonl.keys"):
        assert mode_of(f) == 0o600, f
    for d in (out / "mails", att.parent, out / "feed"):
        assert mode_of(d) == 0o700, d


def test_a_sink_mode_gives_the_group_read_access(project_at, box, loose_umask):
    project = project_at(source={"attachments": {"load": True}},
                         workflow={"sinks": sinks("0640")})
    box.add(mail("Invoice", attachments=[("a.pdf", "application/pdf", PDF)]))
    assert run(project, box).counts["done"] == 1
    out = project.root / "out"
    att = out / "mails" / f"{STEM}.attachments" / "00-a.pdf"
    for f in (out / "mails" / f"{STEM}.json", out / "mails" / f"{STEM}.eml", att,
              out / "feed/mails.jsonl", out / "feed/mails.jsonl.keys"):
        assert mode_of(f) == 0o640, f
    for d in (out / "mails", att.parent, out / "feed"):
        assert mode_of(d) == 0o750, d
    assert mode_of(project.state_dir) == 0o700    # the state stays private


@pytest.mark.parametrize("mode, words", [
    (640, 'write the mode in quotes as octal digits, e.g. mode: "0640"'),
    ("0666", "others at most read"),
    ("0400", "the owner read and write"),
    ("rw-r-----", "is not an octal file mode"),
])
def test_a_bad_sink_mode_is_a_validation_error(tmp_path, mode, words, capsys):
    from wf_support import write_project

    root = write_project(tmp_path / "proj", workflow={
        "sinks": [{"type": "directory", "path": "out", "mode": mode}]})
    from postline.cli import main

    assert main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert "sinks[0].mode" in err and words in err


def test_ledger_outbox_and_their_wal_files_are_0600(tmp_path, loose_umask):
    state = tmp_path / "state"
    led = SqliteLedger(path=ledger_path(state))
    box = Outbox(state / "outbox.sqlite")
    try:
        assert mode_of(state) == 0o700
        for name in ("ledger.sqlite3", "outbox.sqlite"):
            assert mode_of(state / name) == 0o600
            for side in ("-wal", "-shm"):
                if (state / (name + side)).exists():
                    assert mode_of(state / (name + side)) == 0o600
    finally:
        led.close()
        box.close()


def test_an_existing_loose_database_is_closed_to_others(tmp_path):
    db = tmp_path / "ledger.sqlite3"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    (tmp_path / "ledger.sqlite3-wal").write_bytes(b"")
    os.chmod(tmp_path / "ledger.sqlite3-wal", 0o644)
    private_sqlite(db)
    assert mode_of(db) == 0o600 and mode_of(tmp_path / "ledger.sqlite3-wal") == 0o600


def test_make_dirs_sets_the_mode_of_every_directory_it_makes(tmp_path, loose_umask):
    make_dirs(tmp_path / "a/b/c")
    assert [mode_of(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


# -- links planted in the directory sink ---------------------------------------------------

def _planted_project(project_at, box):
    project = project_at(source={"attachments": {"load": True},
                                 "folders": {"input": "INBOX", "error": "Error"}},
                         workflow={"sinks": [{"type": "directory", "path": "out"}]})
    box.add(mail("Invoice", attachments=[("evil.pdf", "application/pdf", PDF)]))
    out = project.root / "out"
    out.mkdir(parents=True)
    return project, out


def test_a_link_planted_as_the_attachments_directory_is_refused(project_at, box, tmp_path):
    project, out = _planted_project(project_at, box)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / f"{STEM}.attachments").symlink_to(elsewhere)
    summary = run(project, box)
    assert summary.counts["failed"] == 1
    assert list(elsewhere.iterdir()) == []                 # nothing written through it
    assert sorted(p.name for p in out.iterdir()) == [f"{STEM}.attachments"]   # the link
    entry = ledger_entry(project)
    assert entry.state == "failed"
    assert f"{STEM}.attachments is a symbolic link; refused" in entry.reason
    assert len(box.folders["Error"]) == 1


@pytest.mark.parametrize("name", [f".{STEM}.eml.tmp", f"{STEM}.eml", f".{STEM}.json.tmp",
                                  f"{STEM}.json"])
def test_a_link_planted_as_a_sink_file_is_refused_and_its_target_kept(project_at, box,
                                                                       tmp_path, name):
    project, out = _planted_project(project_at, box)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / name).symlink_to(victim)
    summary = run(project, box)
    assert summary.counts["failed"] == 1
    assert victim.read_text() == "precious\n"
    entry = ledger_entry(project)
    assert f"{name} is a symbolic link; refused" in entry.reason
    # the mail's other files are taken back: a failed mail leaves nothing of its own (a
    # link at one of its temporary names goes with them: the link, never its target)
    assert sorted(p.name for p in out.iterdir()) in ([name], [])


def test_safe_dir_refuses_a_link_as_a_subdirectory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    (tmp_path / "file").write_text("x")
    with SafeDir.open(tmp_path) as d:
        with pytest.raises(postline.errors.UnsafePathError, match="link is a symbolic link"):
            d.subdir("link")
        with pytest.raises(postline.errors.UnsafePathError, match="file is not a directory"):
            d.subdir("file")


# -- a failed mail leaves nothing in the directory sink -------------------------------------

def test_a_failed_mail_leaves_no_attachments_directory(project_at, box, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj/proc.py").write_text(
        "def on_message(message, ctx):\n    raise ValueError('no amount')\n")
    project = project_at(source={"attachments": {"load": True},
                                 "folders": {"input": "INBOX", "error": "Error"}},
                         workflow={"processor": "proc.py",
                                   "sinks": [{"type": "directory", "path": "out"}]})
    box.add(mail("Invoice", attachments=[("a.pdf", "application/pdf", PDF),
                                         ("b.pdf", "application/pdf", PDF)]))
    summary = run(project, box)
    assert summary.counts["failed"] == 1
    out = project.root / "out"
    assert list(out.iterdir()) == []
    assert list((project.state_dir / "work").rglob("*.part")) == []


def test_the_directory_sink_copies_a_spooled_mail(tmp_path, loose_umask):
    from postline.protocols.base import MessageRef, RawMessage
    from postline.workflow.sinks import DirectorySink

    spooled = tmp_path / "spool.eml"
    spooled.write_bytes(mail("big", body="x" * 3_000_000 + "\n"))
    sink = DirectorySink(path=tmp_path / "out", mode=0o640)
    sink.open()
    try:
        sink.write({"key": KEY}, RawMessage(ref=MessageRef(folder="INBOX", folder_version="1000",
                                                           id="1"), path=spooled))
    finally:
        sink.close()
    eml = tmp_path / "out" / f"{STEM}.eml"
    assert eml.read_bytes() == spooled.read_bytes() and mode_of(eml) == 0o640
    assert mode_of(tmp_path / "out") == 0o750


def test_token_cache_lock_and_spool_files_are_private(tmp_path, loose_umask):
    from postline.protocols.spool import open_spool
    from postline.state import token_cache
    from postline.state.locks import ProcessLock

    class Sealer:
        def seal(self, data: bytes) -> str:
            return data.hex()

    state = tmp_path / "state"
    path = token_cache.cache_path(state, "Box", "incoming")
    token_cache.save(Sealer(), path, "{}")
    lock = ProcessLock(state / "locks" / "x.lock")
    assert lock.try_acquire()
    fh, spooled = open_spool(state / "spool", "mail")
    fh.close()
    lock.release()
    assert [mode_of(p) for p in (path, state / "locks" / "x.lock", spooled)] == [0o600] * 3
    assert [mode_of(d) for d in (state, path.parent, state / "locks", state / "spool")] == \
        [0o700] * 4
