"""``postline try``: a workflow on sample mails (files, Maildir, mbox) or peeking at its
mailbox, as a user sees it: the outcome, the folder, the record, the processor's errors
and sends; and that trying leaves no trace (no ledger, sinks, outbox, server change)."""

from __future__ import annotations

import json
import mailbox
import shutil
from pathlib import Path

import pytest
from wf_support import mail, write_project

from postline.cli import main

REPO = Path(__file__).resolve().parents[3]
SAMPLES = sorted((REPO / "examples/local/samples/mails").glob("*.eml"))


@pytest.fixture
def example(tmp_path) -> Path:
    """A copy of examples/local (trying must write nothing into it: checked by the tests)."""
    root = tmp_path / "local"
    shutil.copytree(REPO / "examples/local", root)
    return root


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --- 1. the example project's processor on its sample mails ---------------------------

def test_the_example_processor_on_its_sample_mails(example, capsys):
    before = files_under(example)
    samples = sorted((example / "samples/mails").glob("*.eml"))
    assert [p.name for p in samples] == [p.name for p in SAMPLES] and len(samples) == 4
    assert main(["try", str(example), "InboxToFiles", *map(str, samples)]) == 0
    out = capsys.readouterr().out
    blocks = out.split(str(example / "samples/mails") + "/")[1:]
    invoice, report, urgent, spam = blocks
    assert invoice.startswith("01-invoice.eml: done (-> Processed/Done)")
    assert "  subject:     Rechnung Nr. 42 – Müller GmbH ✓" in invoice
    assert "  stream:      inbox/20" in invoice       # the source's stream_name template
    assert "  attachment:  rechnung-42 (Übersicht).csv  text/csv  52 bytes  stored: " in invoice
    assert '  processor:   + tags = ["has-attachments", "non-ascii-subject"]' in invoice
    assert "  cc:          Bob <bob@example.test>" in report
    assert '  processor:   + tags = ["urgent"]' in urgent
    assert ("  sends:       Notify.SendAndForget to Ops <ops@example.test>: "
            "'Urgent mail received: URGENT: disk almost full on db-1' (not sent)") in urgent
    assert spam.startswith("04-spam.eml: ignored (-> Processed/Ignored)\n"
                           "  reason:      Subject matches blacklist pattern")
    assert out.splitlines()[-1].startswith(
        "postline: 4 mails tried: 3 done, 1 ignored, 0 failed (no sink written; nothing "
        "sent; attachments in /")
    # no ledger, no outbox, no sink, no attachments in the project
    assert files_under(example) == before


def test_json_gives_one_object_per_mail_with_the_whole_record(example, capsys):
    samples = sorted(map(str, (example / "samples/mails").glob("*.eml")))
    assert main(["try", str(example), "InboxToFiles", *samples, "--json"]) == 0
    captured = capsys.readouterr()
    results = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["outcome"] for r in results] == ["done", "done", "done", "ignored"]
    assert [r["folder"] for r in results] == ["Processed/Done"] * 3 + ["Processed/Ignored"]
    invoice = results[0]
    assert invoice["mail"] == samples[0]
    assert invoice["key"] == "LocalMail/INBOX/try/01-invoice.eml"
    assert invoice["record"]["key"] == invoice["key"]
    assert invoice["record"]["tags"] == ["has-attachments", "non-ascii-subject"]
    assert invoice["record"]["message_id"] == "<invoice-42@billing.example.test>"
    [att] = invoice["record"]["attachments"]
    assert Path(att["path"]).read_bytes().startswith(b"invoice,amount,currency")
    assert invoice["changes"] == {"added": {"tags": ["has-attachments", "non-ascii-subject"]}}
    [sent] = results[2]["sends"]
    assert sent["service"] == "Notify" and sent["method"] == "SendAndForget"
    assert sent["to"] == ["Ops <ops@example.test>"] and sent["sent"] is False
    assert results[3]["record"] is None and "blacklist" in results[3]["reason"]
    assert "postline: 4 mails tried: 3 done, 1 ignored, 0 failed" in captured.err


# --- 2. filters, processors that raise, change the key, return something else ------------

@pytest.fixture
def proj(tmp_path):
    """``make(code=None, **kw)``: a project (workflow Flow) with processor ``code``."""
    def make(code: str | None = None, **kw) -> Path:
        root = tmp_path / "proj"
        root.mkdir(exist_ok=True)
        workflow = kw.pop("workflow", {})
        if code is not None:
            (root / "proc.py").write_text(code)
            workflow = {"processor": "proc.py", **workflow}
        return write_project(root, workflow=workflow, **kw)
    return make


@pytest.fixture
def eml(tmp_path):
    def write(name: str, subject: str, **kw) -> str:
        path = tmp_path / "mails" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(mail(subject, **kw))
        return str(path)
    return write


def test_a_filter_that_ignores_names_its_rule_and_the_mail_stays(proj, eml, capsys):
    root = proj(source={"filters": {"from": {"whitelist": ["@orders\\.example$"]}}})
    keep = eml("a.eml", "order 1", sender="Shop <shop@orders.example>")
    skip = eml("b.eml", "hello", sender="Eve <eve@else.example>")
    assert main(["try", str(root), "Flow", keep, skip]) == 0
    out = capsys.readouterr().out
    assert f"{keep}: done (stays in INBOX)" in out
    assert f"{skip}: ignored (stays in INBOX)\n  reason:      From" in out
    assert "0 failed" in out and not (root / "out").exists()


def test_a_processor_that_raises_shows_its_file_line_and_last_frames(proj, eml, capsys):
    root = proj("def helper(m):\n"
                "    return m['subject'].split()[5]\n"
                "\n"
                "def on_message(m, ctx):\n"
                "    m['word'] = helper(m)\n",
                source={"folders": {"input": "INBOX", "error": "Errors"}})
    good = eml("good.eml", "one two three four five six")
    bad = eml("bad.eml", "short")
    assert main(["try", str(root), "Flow", good, bad]) == 1
    out = capsys.readouterr().out
    assert f"{good}: done (stays in INBOX)" in out
    block = out.split(f"{bad}: ")[1]
    assert block.startswith("failed (-> Errors)\n")
    proc = root / "proc.py"
    assert (f"  reason:      processor: IndexError: list index out of range (at {proc}:2)"
            in block)
    assert (f'  traceback:   File "{proc}", line 5, in on_message\n'
            "                 m['word'] = helper(m)\n"
            f'               File "{proc}", line 2, in helper\n'
            "                 return m['subject'].split()[5]\n") in block
    assert "  subject:     short" in block     # the record as the processor got it
    assert "1 done, 0 ignored, 1 failed" in out


def test_an_error_deep_in_a_library_still_shows_the_processor_line(proj, eml, capsys):
    root = proj("import json\n"
                "\n"
                "def on_message(m, ctx):\n"
                "    m['data'] = json.loads(m['text'])\n")
    assert main(["try", str(root), "Flow", eml("a.eml", "x", body="not json")]) == 1
    out = capsys.readouterr().out
    proc = root / "proc.py"
    assert f"processor: JSONDecodeError: Expecting value: line 1 column 1 (char 0) (at {proc}:4)" in out
    trace = out.split("  traceback:   ")[1].split("  key:")[0].splitlines()
    # the processor's frame, then the last three (json.loads -> decode -> raw_decode)
    assert trace[:2] == [f'File "{proc}", line 4, in on_message',
                         "                 m['data'] = json.loads(m['text'])"]
    assert "json/decoder.py" in trace[-2] and "raise JSONDecodeError" in trace[-1]
    assert sum(line.strip().startswith("File ") for line in trace) == 4


def test_failure_retry_is_not_waited_for(proj, eml, capsys):
    root = proj("def on_message(m, ctx):\n    raise RuntimeError('db down')\n",
                source={"failure": {"on_failure": "retry", "max_retries": 5,
                                    "min_backoff": 60, "max_backoff": 600}})
    assert main(["try", str(root), "Flow", eml("a.eml", "x"), "--json"]) == 1
    [result] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert result["outcome"] == "failed"
    assert result["reason"].startswith("processor: RuntimeError: db down (at ")


def test_a_processor_that_changes_the_key_is_told(proj, eml, capsys):
    root = proj("def on_message(m, ctx):\n    m['key'] = 'mine'\n")
    assert main(["try", str(root), "Flow", eml("a.eml", "x")]) == 0
    out = capsys.readouterr().out
    assert (f"  warning:     on_message ({root / 'proc.py'}:1) changed the record's key to "
            "'mine'; a round keeps the ledger key Box/INBOX/try/a.eml") in out
    assert "  key:         Box/INBOX/try/a.eml" in out


def test_a_processor_that_returns_no_record_is_told(proj, eml, capsys):
    root = proj("def on_message(m, ctx):\n    return [m]\n")
    assert main(["try", str(root), "Flow", eml("a.eml", "x")]) == 1
    out = capsys.readouterr().out
    assert "a.eml: failed (stays in INBOX)" in out
    assert ("  reason:      processor: TypeError: on_message returned list; return a dict "
            "or None") in out
    assert (f"  warning:     on_message ({root / 'proc.py'}:1) returned a list, not a "
            "record") in out


def test_ignore_from_the_processor(proj, eml, capsys):
    root = proj("def on_message(m, ctx):\n    ctx.ignore('not for us')\n",
                source={"folders": {"input": "INBOX", "ignore": "Skipped"}})
    assert main(["try", str(root), "Flow", eml("a.eml", "x")]) == 0
    assert "a.eml: ignored (-> Skipped)\n  reason:      not for us" in capsys.readouterr().out


# --- 3. what FILE can be ----------------------------------------------------------------

def test_maildir_mbox_and_a_directory_of_emls(proj, eml, tmp_path, capsys):
    root = proj()
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    md.add(mail("from maildir 1"))
    md.add(mail("from maildir 2"))
    mb = mailbox.mbox(tmp_path / "box.mbox", create=True)
    mb.add(mail("from mbox"))
    mb.flush()
    mb.close()
    eml("c.eml", "from a directory")
    args = [str(tmp_path / "Maildir"), str(tmp_path / "box.mbox"), str(tmp_path / "mails")]
    assert main(["try", str(root), "Flow", *args, "--json"]) == 0
    results = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["subject"] for r in results] == ["from maildir 1", "from maildir 2",
                                               "from mbox", "from a directory"]
    assert results[2]["mail"] == f"{tmp_path / 'box.mbox'} #1"
    assert results[2]["key"] == "Box/INBOX/try/box.mbox#1"
    assert results[3]["mail"] == str(tmp_path / "mails" / "c.eml")
    assert all(r["outcome"] == "done" and r["record"]["received"] for r in results)


@pytest.mark.parametrize("args, message", [
    (["missing.eml"], "postline: error: missing.eml: no such file"),
    (["EMPTY"], "postline: error: EMPTY: the file is empty, not a mail"),
    (["DIR"], "postline: error: DIR: a directory that is neither a Maildir (cur/ and new/) "
              "nor holds .eml files"),
    ([], "postline: error: nothing to try: give .eml files, Maildirs or mbox files, or "
         "--peek N"),
    (["a.eml", "--peek", "2"], "postline: error: give FILE... or --peek N, not both"),
    (["--peek", "0"], "postline: error: --peek 0: expected a number of mails above 0"),
])
def test_bad_arguments_are_one_line(proj, tmp_path, monkeypatch, capsys, args, message):
    root = proj()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").write_bytes(b"")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "a.eml").write_bytes(mail("x"))
    assert main(["try", str(root), "Flow", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[0].startswith(message) and len(err.splitlines()) == 1


def test_an_unknown_workflow(proj, eml, capsys):
    root = proj()
    assert main(["try", str(root), "Nope", eml("a.eml", "x")]) == 1
    assert "no Workflow named 'Nope' in the project (known: Flow)" in capsys.readouterr().err


# --- 4. sinks only with --write-sinks -----------------------------------------------------

def test_write_sinks_writes_them_and_stores_attachments_there(proj, eml, capsys):
    root = proj(source={"attachments": {"load": True}},
                workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                                    {"type": "directory", "path": "out/dir"}]})
    path = eml("a.eml", "with file", attachments=[("a.txt", "text/plain", b"hello")])
    assert main(["try", str(root), "Flow", path]) == 0
    assert "attachments in /" in capsys.readouterr().out and not (root / "out").exists()
    assert main(["try", str(root), "Flow", path, "--write-sinks"]) == 0
    out = capsys.readouterr().out
    assert "(nothing sent)" in out and "attachments in" not in out
    [line] = (root / "out/mails.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["key"] == "Box/INBOX/try/a.eml"
    stored = Path(record["attachments"][0]["path"])
    assert stored.read_bytes() == b"hello" and (root / "out/dir") in stored.parents
    assert not (root / ".postline-state" / "ledger.sqlite").exists()


# --- 5. --peek through a reader (the real servers: tests/integration/source) ------------

def test_peek_opens_the_folder_read_only_and_takes_the_newest(proj, box, monkeypatch,
                                                              capsys):
    import postline.protocols as protocols

    monkeypatch.setattr(protocols, "open_reader", lambda project, conn: box.reader())
    root = proj(source={"folders": {"input": "INBOX", "done": "Done"}})
    for s in ("one", "two", "three"):
        box.add(mail(s))
    assert main(["try", str(root), "Flow", "--peek", "2", "--json"]) == 0
    results = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["subject"] for r in results] == ["two", "three"]
    assert [r["mail"] for r in results] == ["Box/INBOX/1000/2", "Box/INBOX/1000/3"]
    assert results[0]["folder"] == "Done"
    assert box.readonly is True
    assert box.calls == ["connect", "open_folder", "list_messages", "fetch"]
    assert sorted(box.folders["INBOX"]) == [1, 2, 3] and "Done" not in box.folders


# --- 6. services: checked as the real one checks, shown, not sent -----------------------

SERVICE_DOCS = [
    {"kind": "EmailConnection", "name": "Out",   # port 1: nothing listens, nothing is sent
     "outgoing": {"protocol": "smtp", "host": "127.0.0.1", "port": 1, "security": "none",
                  "credential": {"type": "none"}}},
    {"kind": "EmailService", "name": "Mailer", "connection": "Out",
     "default_from": "Robot <robot@example.test>"}]


def test_sends_are_checked_and_shown_not_sent(proj, eml, capsys):
    # the mail's subject names the recipient: "not an address" fails as it would in a round
    root = proj("def on_message(m, ctx):\n"
                "    r = ctx.services.Notify.Send({'ToList': m['subject'] + '; B <b@example.test>',\n"
                "                                  'Bcc': [{'Address': 'c@example.test'}],\n"
                "                                  'Subject': 'about it', 'Body': 'hi'})\n"
                "    m['accepted'] = r.accepted\n"
                "    m['reply'] = r.server_reply\n",
                workflow={"services": {"Notify": "Mailer"}}, extra=SERVICE_DOCS)
    good = eml("good.eml", "a@example.test")
    bad = eml("bad.eml", "not an address")
    assert main(["try", str(root), "Flow", good, bad]) == 1
    out = capsys.readouterr().out
    assert ("  sends:       Mailer.Send to a@example.test, B <b@example.test>, "
            "bcc c@example.test: 'about it' (not sent)") in out
    assert "  processor:   + reply = \"not sent (postline try)\"" in out
    assert ('  processor:   + accepted = ["a@example.test", "b@example.test", '
            '"c@example.test"]') in out
    block = out.split("bad.eml: ")[1]
    assert block.startswith("failed (stays in INBOX)\n  reason:      processor: "
                            "MessageError: ")
    assert "  sends:       Mailer.Send to (nobody): 'about it' (not sent: " in block
    assert main(["try", str(root), "Flow", good, "--json"]) == 0
    [result] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    [sent] = result["sends"]
    assert sent == {"service": "Mailer", "method": "Send",
                    "to": ["a@example.test", "B <b@example.test>"], "cc": [],
                    "bcc": ["c@example.test"], "subject": "about it", "sent": False,
                    "message_id": sent["message_id"], "error": None}
    assert sent["message_id"].startswith("<") and sent["message_id"].endswith(
        "@example.test>")


def test_a_processor_that_does_not_import_is_one_line(proj, eml, capsys):
    root = proj("import json\nSETTINGS = json.loads('{')\n\ndef on_message(m, ctx):\n"
                "    pass\n")
    assert main(["try", str(root), "Flow", eml("a.eml", "x")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"postline: error: processor {root / 'proc.py'} of workflow Flow "
                           "failed to import: JSONDecodeError") and line.endswith(":2)")
