"""The Python processor: the ledger key it cannot change, exits and errors it raises (with
the file and line), its load-time checks, and ``Ignore`` to skip a mail on purpose."""

from __future__ import annotations

import logging

import pytest
from wf_support import Crash, FakeMailbox, mail, read_jsonl

from postline.errors import ConfigError, ValidationFailed
from postline.logs import register_secret
from postline.source.schedule import FakeClock
from postline.state.ledger import SqliteLedger, ledger_path
from postline.workflow.engine import run_workflows


def run(project, box):
    return run_workflows(project, once=True, reader_factory=lambda conn: box.reader(),
                         clock=FakeClock())


def entries(project, **kw):
    ledger = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        return ledger.entries("Src", **kw)
    finally:
        ledger.close()


@pytest.fixture
def with_processor(project_at, tmp_path):
    """``make(code, source=..., workflow=...)``: a project whose workflow runs ``code``."""
    def make(code: str, **kw):
        (tmp_path / "proj").mkdir(exist_ok=True)
        (tmp_path / "proj" / "proc.py").write_text(code)
        workflow = {"processor": "proc.py", **kw.pop("workflow", {})}
        return project_at(workflow=workflow, **kw)
    return make


# --- 1. the ledger key is not the processor's to change ---------------------------------

def test_a_processor_changing_the_key_loses_no_mail(with_processor, box, caplog):
    project = with_processor(
        "def on_message(m, ctx):\n    m['key'] = 'same'\n",
        source={"folders": {"input": "INBOX", "done": "Done"}},
        workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                            {"type": "directory", "path": "out/dir"}]})
    box.add(mail("one"))
    box.add(mail("two"))
    with caplog.at_level(logging.WARNING, logger="postline.processor"):
        summary = run(project, box)
    assert summary.counts["done"] == 2
    records = read_jsonl(project.root / "out/mails.jsonl")
    assert sorted(r["subject"] for r in records) == ["one", "two"]
    assert sorted(r["key"] for r in records) == sorted(e.key for e in entries(project))
    assert len(list((project.root / "out/dir").glob("*.json"))) == 2
    warnings = [r.getMessage() for r in caplog.records if "changed the record's key" in
                r.getMessage()]
    assert len(warnings) == 2 and "'same'" in warnings[0]


def test_a_new_dict_without_key_gets_the_ledger_key(with_processor, box):
    project = with_processor("def on_message(m, ctx):\n    return {'subject': m['subject']}\n")
    box.add(mail("one"))
    summary = run(project, box)
    assert summary.counts["done"] == 1 and not summary.errors
    [e] = entries(project)
    assert read_jsonl(project.root / "out/mails.jsonl") == [{"subject": "one", "key": e.key}]


# --- 2. exits raised by the processor fail that mail --------------------------------------

@pytest.mark.parametrize("raise_it, shown", [("raise SystemExit(3)", "SystemExit: 3"),
                                             ("raise KeyboardInterrupt", "KeyboardInterrupt"),
                                             ("import sys; sys.exit()", "SystemExit")])
def test_an_exit_in_the_processor_fails_the_mail(with_processor, box, raise_it, shown):
    project = with_processor(
        "def on_message(m, ctx):\n"
        "    if m['subject'] == 'bad':\n"
        f"        {raise_it}\n",
        source={"folders": {"input": "INBOX", "done": "Done", "error": "Err"}})
    box.add(mail("bad"))
    box.add(mail("good"))
    summary = run(project, box)
    assert (summary.counts["failed"], summary.counts["done"]) == (1, 1)
    assert not summary.errors
    [failed] = entries(project, state="failed")
    assert failed.reason.startswith(f"processor: {shown} (at ")
    assert failed.reason.endswith("proc.py:3)")
    assert len(box.folders["Err"]) == 1 and len(box.folders["Done"]) == 1


def test_a_crash_of_a_workflow_thread_is_an_error_of_the_run(project_at, box):
    project = project_at()
    box.add(mail("one"))
    box.fail("list_messages", Crash("the reader died"))
    summary = run(project, box)
    assert summary.errors["Flow"] == "Crash: the reader died"


# --- 3. errors name the processor's file and line -----------------------------------------

def test_the_reason_names_the_line_in_the_processor(with_processor, box, caplog,
                                                    monkeypatch):
    register_secret("hunter2-very-secret")
    project = with_processor(
        "import json\n"
        "def helper(m):\n"
        "    return json.dumps(m['subject'] + 1)\n"
        "def on_message(m, ctx):\n"
        "    if 'secret' in m['subject']:\n"
        "        raise ValueError('token hunter2-very-secret refused')\n"
        "    helper(m)\n",
        source={"folders": {"input": "INBOX", "error": "Err"}})
    monkeypatch.chdir(project.root)   # the file is shown relative to the working directory
    box.add(mail("plain"))
    box.add(mail("secret"))
    with caplog.at_level(logging.DEBUG, logger="postline.processor"):
        summary = run(project, box)
    assert summary.counts["failed"] == 2
    reasons = {e.subject: e.reason for e in entries(project, state="failed")}
    assert reasons["plain"] == ('processor: TypeError: can only concatenate str (not "int") '
                                'to str (at proc.py:3)')
    assert reasons["secret"] == "processor: ValueError: token *** refused (at proc.py:6)"
    tracebacks = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
                  and "Traceback" in r.getMessage()]
    assert len(tracebacks) == 2
    assert all("hunter2-very-secret" not in t for t in tracebacks)
    assert any('proc.py", line 3, in helper' in t for t in tracebacks)


def test_an_import_error_names_the_line_of_the_import(with_processor, box):
    project = with_processor("import os\nimport no_such_module_for_postline\n"
                             "def on_message(m, ctx):\n    pass\n")
    with pytest.raises(ConfigError) as err:
        run(project, box)
    assert ("ModuleNotFoundError: No module named 'no_such_module_for_postline'"
            in str(err.value))
    assert str(err.value).endswith("proc.py:2)")
    assert "\n" not in str(err.value)


def test_on_message_must_take_message_and_ctx(with_processor, box):
    project = with_processor("def on_message(m):\n    pass\n")
    with pytest.raises(ConfigError) as err:
        run(project, box)
    assert str(err.value).endswith("proc.py: on_message must take (message, ctx), "
                                   "it takes (m)")


def test_validate_reports_a_processor_without_on_message(with_processor):
    with pytest.raises(ValidationFailed) as err:
        with_processor("import nothing_is_imported_by_validate\n"
                       "def on_mesage(m, ctx):\n    pass\n")
    [problem] = [p for p in err.value.problems if getattr(p, "severity", "error") == "error"]
    assert "proc.py: defines no on_message(message, ctx) function" in str(problem.message)


# --- 4. Ignore: skip a mail on purpose ----------------------------------------------------

IGNORING = ("from postline import Ignore\n"
            "def on_message(m, ctx):\n"
            "    if m['subject'] == 'newsletter':\n"
            "        raise Ignore('not an invoice')\n"
            "    if m['subject'] == 'auto-reply':\n"
            "        ctx.ignore('an auto-reply')\n")


def test_ignore_records_the_mail_as_ignored_and_moves_it(with_processor, box):
    project = with_processor(IGNORING, source={
        "folders": {"input": "INBOX", "done": "Done", "ignore": "Ignored"},
        "failure": {"on_failure": "retry", "max_retries": 3}})
    for s in ("newsletter", "invoice", "auto-reply"):
        box.add(mail(s))
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["ignored"]) == (1, 2)
    assert [r["subject"] for r in read_jsonl(project.root / "out/mails.jsonl")] == ["invoice"]
    reasons = {e.subject: e.reason for e in entries(project, state="ignored")}
    assert reasons == {"newsletter": "not an invoice", "auto-reply": "an auto-reply"}
    assert len(box.folders["Ignored"]) == 2 and len(box.folders["Done"]) == 1


def test_ignore_on_pop3_follows_pop3_ignore(with_processor):
    box = FakeMailbox(pop3=True)
    project = with_processor(IGNORING, protocol="pop3",
                             source={"pop3": {"ignore": "delete", "done": "keep"}})
    box.add(mail("newsletter"))
    box.add(mail("invoice"))
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["ignored"]) == (1, 1)
    assert len(box.folders["INBOX"]) == 1
