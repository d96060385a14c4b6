"""A full disk: nothing may be lost, nothing marked done, and the user is told in one line.

``/dev/full`` fails every write with ENOSPC; ``RLIMIT_FSIZE`` (with SIGXFSZ ignored) makes
any write past the limit fail with EFBIG, the way a nearly full disk would.
"""

from __future__ import annotations

import json

import pytest


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


FULL_JSONL = [
    [{"type": "jsonl", "path": "/dev/full"}],
    [{"type": "jsonl", "path": "/dev/full"}, {"type": "directory", "path": "out/mails"}],
]


@pytest.mark.parametrize("sinks", FULL_JSONL, ids=["jsonl", "jsonl+directory"])
def test_full_disk_in_jsonl_sink_never_marks_the_mail_done(stack_project, sinks):
    """What holds already: the failure is reported and the mail is not marked done."""
    p = stack_project(sinks=sinks)
    p.deliver("disk full one")
    res = p.cli("run", ".", "--once", "-vv")
    assert p.user.password not in res.out + res.err
    assert "No space left on device" in res.err or "ENOSPC" in res.err
    assert p.subjects("Done") == []
    assert records(p.root / "out" / "records.jsonl") == []


@pytest.mark.parametrize("sinks", FULL_JSONL, ids=["jsonl", "jsonl+directory"])
def test_full_disk_in_jsonl_sink_keeps_the_mail_and_delivers_it_later(stack_project, sinks):
    p = stack_project(sinks=sinks)
    p.deliver("disk full two")
    res = p.cli("run", ".", "--once", "-vv")
    assert res.code == 1, res.err
    res.assert_clean(p.user.password)          # no "workflow W crashed" traceback either
    assert "/dev/full" in res.error and "no space left on device" in res.error.lower()
    assert p.subjects("INBOX") == ["disk full two"]
    assert p.subjects("Errors") == [] and p.subjects("Done") == []

    # space again: the same mail is delivered exactly once
    wf = (p.root / "workflow.yaml")
    wf.write_text(wf.read_text().replace("/dev/full", "out/records.jsonl"))
    again = p.cli("run", ".", "--once")
    assert again.code == 0, again.err
    assert [r["subject"] for r in records(p.root / "out" / "records.jsonl")] == ["disk full two"]
    assert p.subjects("Done") == ["disk full two"] and p.subjects("INBOX") == []


def test_directory_sink_past_the_file_size_limit_keeps_the_mail(stack_project):
    p = stack_project(sinks=[{"type": "directory", "path": "out/mails"}])
    p.stack.deliver(p.user.email, (
        f"From: a@example.test\r\nTo: {p.user.email}\r\nSubject: big one\r\n"
        "Message-ID: <big-one@qa.test>\r\n\r\n").encode() + b"x" * 400_000 + b"\r\n")
    res = p.cli("run", ".", "--once", fsize_limit=300_000)
    assert res.code == 1, res.err
    res.assert_clean(p.user.password)
    assert "file too large" in res.error.lower() or "no space" in res.error.lower()
    assert p.subjects("INBOX") == ["big one"] and p.subjects("Errors") == []

    again = p.cli("run", ".", "--once")
    assert again.code == 0, again.err
    assert p.subjects("Done") == ["big one"]
    assert len(list((p.root / "out" / "mails").glob("*.eml"))) == 1


def test_attachment_past_the_file_size_limit_keeps_the_mail(stack_project):
    """Attachments are written by a store thread: its failure still stops the round before
    anything is marked done, and the next run delivers the mail once."""
    import hashlib
    from email.message import EmailMessage

    p = stack_project(sinks=[{"type": "jsonl", "path": "out/records.jsonl"}])
    src = p.root / "source.yaml"
    src.write_text(src.read_text() + "attachments: {load: true}\n")
    payload = bytes(range(256)) * 1600          # 400 KB
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.test", p.user.email, "big attachment"
    m["Message-ID"] = "<big-attachment@qa.test>"
    m.set_content("see the file")
    m.add_attachment(payload, maintype="application", subtype="octet-stream",
                     filename="data.bin")
    p.stack.deliver(p.user.email, m.as_bytes())
    res = p.cli("run", ".", "--once", fsize_limit=300_000)
    assert res.code == 1, res.err
    res.assert_clean(p.user.password)
    assert "file too large" in res.error.lower() and "attachment" in res.error, res.error
    assert p.subjects("INBOX") == ["big attachment"] and p.subjects("Errors") == []
    assert records(p.root / "out" / "records.jsonl") == []

    again = p.cli("run", ".", "--once")
    assert again.code == 0, again.err
    [rec] = records(p.root / "out" / "records.jsonl")
    [att] = rec["attachments"]
    assert att["sha256"] == hashlib.sha256(payload).hexdigest() and att["size"] == len(payload)
    assert (p.root / att["path"]).read_bytes() == payload   # (an absolute path stays one)
    assert p.subjects("Done") == ["big attachment"]


def test_full_disk_for_the_outbox_fails_loudly(stack_project):
    """SendAndForget on a full disk: exit 1, one line, and nothing claims it was queued."""
    p = stack_project()
    big = json.dumps({"To": [{"Address": p.user.email}], "Subject": "queued on a full disk",
                      "Body": "x" * 200_000})
    res = p.cli("send", ".", "Out", "--forget", "--message", "-", stdin=big,
                fsize_limit=65_536)
    assert res.code == 1
    res.assert_clean(p.user.password)
    assert res.error.startswith("postline: error: ")
    assert "queued" not in res.out.lower()
    listed = p.cli("outbox", "list", ".", "Out", "--json")
    assert listed.code == 0
    assert "queued on a full disk" not in listed.out     # not half-stored either


def test_full_disk_for_the_outbox_names_the_outbox(stack_project):
    p = stack_project()
    big = json.dumps({"To": [{"Address": p.user.email}], "Subject": "s", "Body": "x" * 200_000})
    res = p.cli("send", ".", "Out", "--forget", "--message", "-", stdin=big,
                fsize_limit=65_536)
    assert res.code == 1
    assert "outbox" in res.error and "unexpected" not in res.error


def test_unwritable_state_dir_is_one_line(stack_project, tmp_path):
    """A state directory that cannot be created: one line naming the path, no traceback."""
    p = stack_project()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    res = p.cli("run", ".", "--once", env={"POSTLINE_STATE_DIR": str(blocker / "state")})
    assert res.code == 1
    res.assert_clean(p.user.password)
    assert str(blocker) in res.error, res.err
