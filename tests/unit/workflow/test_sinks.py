"""The sinks through the runner (in-memory mailbox, a real HTTP receiver on 127.0.0.1):
what each writes, HTTP retries and Retry-After, and that a mail which fails leaves nothing
in the directory and JSONL sinks (so a retried mail reaches them once)."""

from __future__ import annotations

import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from wf_support import mail, read_jsonl

from postline.errors import ConfigError, DeliveryError
from postline.protocols.base import MessageRef, RawMessage
from postline.source.schedule import Clock, FakeClock
from postline.state.ledger import SqliteLedger, ledger_path
from postline.workflow.engine import run_workflows
from postline.workflow.sinks import HttpSink

RAW = RawMessage(ref=MessageRef(folder="INBOX", folder_version="1", id="1"), data=b"x")


class Receiver:
    """A webhook on 127.0.0.1 (random port): answers with the scripted ``(status,
    headers)`` in turn, then 200; keeps every request's headers and JSON body."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[tuple[dict[str, str], dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), json.loads(body)))
                status, headers = outer.script.pop(0) if outer.script else (200, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, n: int, status: int = 500, **headers: str) -> None:
        self.script += [(status, headers)] * n

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    r = Receiver()
    yield r
    r.close()


def run(project, box, clock=None):
    return run_workflows(project, once=True, reader_factory=lambda conn: box.reader(),
                         clock=clock or FakeClock())


def entries(project, **kw):
    ledger = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        return ledger.entries("Src", **kw)
    finally:
        ledger.close()


def http(hook, **kw):
    return {"type": "http", "url": hook.url, "timeout": 5, **kw}


ALL3 = ({"type": "jsonl", "path": "out/mails.jsonl"},
        {"type": "directory", "path": "out/dir"})


# -- what each sink writes ---------------------------------------------------------------


def test_stdout_sink_prints_one_json_line_per_mail(project_at, box, capsys):
    project = project_at(workflow={"sinks": [{"type": "stdout"}]})
    box.add(mail("one"))
    box.add(mail("zwei ☃"))
    assert run(project, box).counts["done"] == 2
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["subject"] for line in lines] == ["one", "zwei ☃"]
    assert "☃" in lines[1]     # UTF-8, not \\u escapes


@pytest.mark.parametrize("keep_eml", [True, False])
def test_directory_sink_writes_the_record_and_the_original_when_asked(project_at, box,
                                                                     keep_eml):
    project = project_at(workflow={"sinks": [{"type": "directory", "path": "out/dir",
                                              "keep_eml": keep_eml}]})
    raw = mail("kept")
    box.add(raw)
    assert run(project, box).counts["done"] == 1
    out = project.root / "out/dir"
    [rec_file] = out.glob("*.json")
    rec = json.loads(rec_file.read_text(encoding="utf-8"))
    assert rec["subject"] == "kept"
    emls = list(out.glob("*.eml"))
    if keep_eml:
        assert [p.read_bytes() for p in emls] == [raw]
        assert rec["eml_path"] == str(emls[0]) and emls[0].stem == rec_file.stem
    else:
        assert emls == [] and rec["eml_path"] is None
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []   # no temp files


# -- the http sink -----------------------------------------------------------------------


def test_http_sink_posts_with_the_ledger_key_as_idempotency_key(project_at, box, hook):
    project = project_at(workflow={"sinks": [http(hook, headers={"X-Token": "t0k"})]})
    box.add(mail("posted"))
    assert run(project, box).counts["done"] == 1
    [(headers, body)] = hook.requests
    [entry] = entries(project)
    assert headers["Idempotency-Key"] == entry.key == body["key"]
    assert headers["X-Token"] == "t0k" and headers["Content-Type"] == "application/json"
    assert body["subject"] == "posted"


def test_http_sink_retries_a_500_with_backoff_on_the_runner_clock(project_at, box, hook):
    project = project_at(workflow={"sinks": [http(hook, retries=3, min_backoff=2,
                                                  max_backoff=5)]})
    box.add(mail("flaky"))
    hook.fail(3)
    clock = FakeClock()
    assert run(project, box, clock).counts["done"] == 1
    assert len(hook.requests) == 4
    assert clock.waits == [2, 4, 5]     # the sink's pauses, not slept for real


def test_http_sink_waits_as_long_as_retry_after_says(project_at, box, hook):
    project = project_at(workflow={"sinks": [http(hook, retries=5, min_backoff=0.5,
                                                  max_backoff=20)]})
    box.add(mail("busy"))
    clock = FakeClock()
    hook.fail(1, 429, **{"Retry-After": "7"})
    # an HTTP date 12 s after the first pause ends (the fake clock moves with each wait)
    hook.fail(1, 503, **{"Retry-After": formatdate(clock.now() + 7 + 12, usegmt=True)})
    hook.fail(1, 429, **{"Retry-After": "3600"})     # capped at max_backoff
    hook.fail(1, 429, **{"Retry-After": "soon"})     # unreadable: the backoff
    hook.fail(1, 500, **{"Retry-After": "9"})        # only 429 and 503 count
    assert run(project, box, clock).counts["done"] == 1
    assert len(hook.requests) == 6
    assert clock.waits == [7, 12, 20, 4, 8]


def test_http_retry_after_is_never_shorter_than_the_backoff():
    waits: list[float] = []
    s = HttpSink(url="http://127.0.0.1:9/hook", headers={}, timeout=1, retries=2,
                 min_backoff=4, max_backoff=10, sleep=waits.append,
                 transport=_mock([(429, {"Retry-After": "1"}), (429, {"Retry-After": "0"}),
                                  (200, {})]))
    s.open()
    s.write({"key": "k1"}, RAW)
    assert waits == [4, 8]


def test_a_stop_request_ends_the_http_retry_pause_at_once():
    stop = threading.Event()
    s = HttpSink(url="http://127.0.0.1:9/hook", headers={}, timeout=1, retries=3,
                 min_backoff=30, max_backoff=30,
                 transport=_mock([(503, {"Retry-After": "30"})] * 4))
    s.open()
    s.bind_stop(Clock(), stop)
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        s.write({"key": "k1"}, RAW)
    assert time.monotonic() - t0 < 5
    assert err.value.retriable and "stop" in str(err.value)


def test_a_stop_during_the_http_retries_leaves_the_mail_for_the_next_run(project_at, box,
                                                                          hook):
    class StopOnWait(FakeClock):
        def __init__(self, stop):
            super().__init__()
            self.stop = stop

        def wait(self, seconds, stop):
            self.stop.set()       # Ctrl-C while the sink waits to retry
            return super().wait(seconds, stop)

    project = project_at(source={"folders": {"input": "INBOX", "error": "Err"}},
                         workflow={"sinks": [*ALL3, http(hook, retries=3)]})
    box.add(mail("in flight"))
    hook.fail(1, 503)
    stop = threading.Event()
    summary = run_workflows(project, once=True, reader_factory=lambda c: box.reader(),
                            clock=StopOnWait(stop), stop=stop)
    assert summary.counts["interrupted"] == 1 and summary.counts["failed"] == 0
    assert len(hook.requests) == 1
    assert [e.state for e in entries(project)] == ["acquired"]
    assert read_jsonl(project.root / "out/mails.jsonl") == []
    assert list((project.root / "out/dir").iterdir()) == []
    assert "Err" not in box.folders or box.folders["Err"] == {}


def _mock(script):
    import httpx

    answers = list(script)

    def handle(request):
        status, headers = answers.pop(0)
        return httpx.Response(status, headers=headers)
    return httpx.MockTransport(handle)


# -- a failing mail leaves nothing behind ------------------------------------------------


def test_a_later_sink_failing_leaves_no_jsonl_line_or_directory_files(project_at, box, hook,
                                                                      monkeypatch, capsys):
    import postline.protocols as protocols
    from postline.cli import main

    project = project_at(source={"folders": {"input": "INBOX", "done": "Done",
                                             "error": "Err"}},
                         workflow={"sinks": [*ALL3, http(hook, retries=0)]})
    box.add(mail("before"))
    box.add(mail("down", message_id="<down@example.test>"))
    box.add(mail("after"))
    hook.fail(1, 200)    # "before" is accepted, "down" is not, "after" is
    hook.fail(1, 503)
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["failed"]) == (2, 1)
    assert len(box.folders["Err"]) == 1
    out = project.root / "out"
    assert [r["subject"] for r in read_jsonl(out / "mails.jsonl")] == ["before", "after"]
    subjects = sorted(json.loads(p.read_text())["subject"] for p in (out / "dir").glob("*.json"))
    assert subjects == ["after", "before"]
    assert len(list((out / "dir").glob("*.eml"))) == 2
    assert [p.name for p in (out / "dir").iterdir() if p.name.startswith(".")] == []
    # the receiver is back: the operator retries, and the mail (a new UID, a new key)
    # reaches every sink once
    monkeypatch.setattr(protocols, "open_reader", lambda project, conn: box.reader())
    assert main(["ledger", "retry", str(project.root), "Src", "--all"]) == 0
    capsys.readouterr()
    assert run(project, box).counts["done"] == 1
    records = read_jsonl(out / "mails.jsonl")
    assert sorted(r["subject"] for r in records) == ["after", "before", "down"]
    assert len(list((out / "dir").glob("*.json"))) == 3
    assert len(list((out / "dir").glob("*.eml"))) == 3
    [down] = [r for r in records if r["subject"] == "down"]
    assert hook.requests[-1][0]["Idempotency-Key"] == down["key"]


def test_retry_then_success_delivers_the_last_attempt_once(project_at, box, hook, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "proc.py").write_text(
        "calls = []\n"
        "def on_message(message, ctx):\n"
        "    calls.append(1)\n"
        "    message['attempt'] = len(calls)\n")
    project = project_at(source={"failure": {"on_failure": "retry", "max_retries": 3,
                                             "min_backoff": 1, "max_backoff": 2}},
                         workflow={"processor": "proc.py",
                                   "sinks": [*ALL3, http(hook, retries=0)]})
    box.add(mail("twice down"))
    hook.fail(2, 502)
    clock = FakeClock()
    assert run(project, box, clock).counts["done"] == 1
    assert clock.waits == [1, 2]
    [rec] = read_jsonl(project.root / "out/mails.jsonl")
    [rec_file] = (project.root / "out/dir").glob("*.json")
    assert rec["attempt"] == 3
    assert json.loads(rec_file.read_text())["attempt"] == 3
    assert len(list((project.root / "out/dir").glob("*.eml"))) == 1
    assert [b["attempt"] for _, b in hook.requests] == [1, 2, 3]


def test_retries_that_run_out_leave_nothing_in_the_sinks(project_at, box, hook):
    project = project_at(source={"failure": {"on_failure": "retry", "max_retries": 2,
                                             "min_backoff": 1, "max_backoff": 1}},
                         workflow={"sinks": [*ALL3, http(hook, retries=1)]})
    box.add(mail("always down"))
    hook.fail(6, 500)
    assert run(project, box).counts["failed"] == 1
    assert len(hook.requests) == 6         # (1 + retries) x (1 + max_retries) POSTs
    assert read_jsonl(project.root / "out/mails.jsonl") == []
    assert list((project.root / "out/dir").iterdir()) == []


def test_a_discard_in_a_batch_keeps_the_lines_of_the_other_mails(project_at, box, hook):
    # mails dropped in the middle of a batch: its lines are exactly those of the mails
    # kept, and the JSONL index names only them
    project = project_at(workflow={"sinks": [*ALL3, http(hook, retries=0)]})
    for s in ("a", "b", "c", "d"):
        box.add(mail(s))
    hook.fail(1, 200)
    hook.fail(1, 500)
    hook.fail(1, 200)
    hook.fail(1, 500)
    summary = run(project, box)
    assert (summary.counts["done"], summary.counts["failed"]) == (2, 2)
    out = project.root / "out/mails.jsonl"
    assert [r["subject"] for r in read_jsonl(out)] == ["a", "c"]
    index = out.with_name("mails.jsonl.keys").read_text().splitlines()
    assert [int(line.split()[0]) for line in index][-1] == out.stat().st_size
    assert len(index) == 2


# -- settings ----------------------------------------------------------------------------


def test_failure_backoff_min_above_max_is_refused(project_at):
    with pytest.raises(ConfigError) as err:
        project_at(source={"failure": {"min_backoff": 10, "max_backoff": 1}})
    [problem] = err.value.problems
    assert "failure: max_backoff (1.0) must not be less than min_backoff (10.0)" in \
        str(problem)
