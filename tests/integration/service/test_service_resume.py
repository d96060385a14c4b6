"""Mails left ``queued`` by an earlier process are delivered as soon as a process that runs
the service starts -- ``postline serve``, ``postline run`` with services -- without any API
call and without a new mail for the processor.

The earlier process: ``postline send --forget`` while another process held the outbox's
delivery lock (so it only queued the mail), then that holder stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from svc_helpers import write_project

from postline.state.locks import ProcessLock
from postline.testing.ports import free_ports, port_open, wait_until
from postline.testing.smtp_faults import FaultyServer

MSG = {"From": "app@example.test", "To": [{"Address": "ann@example.test"}],
       "Subject": "queued before the restart", "Body": "hello"}
TOKEN = "resume-token-0123456789abcdef"


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "postline", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=_env())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POSTLINE_STATE_DIR"}
    return {**env, **extra}


def _queue_while_nobody_delivers(root: Path) -> int:
    """``postline send --forget`` while the outbox lock is held elsewhere; returns the id."""
    lock = ProcessLock(root / ".postline-state" / "outbox-Notify.lock")
    assert lock.try_acquire()
    try:
        out = _cli("send", str(root), "Notify", "--message", "-", "--forget", "--json",
                   stdin=json.dumps(MSG))
        assert out.returncode == 0, out.stderr
        queued = json.loads(out.stdout.splitlines()[0])
        assert queued["state"] == "queued" and queued["delivered_by_this_process"] is False
        assert "delivers this outbox; it sends the mail" in out.stderr
    finally:
        lock.release()      # the process that delivered stopped
    return queued["id"]


def _outbox(root: Path) -> list[dict]:
    out = _cli("outbox", "list", str(root), "Notify", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def smtp():
    with FaultyServer(mode="accept") as server:
        yield server


def test_serve_delivers_mail_queued_before_it_started(tmp_path, smtp):
    root = write_project(tmp_path / "proj", host="127.0.0.1", port=smtp.port)
    entry_id = _queue_while_nobody_delivers(root)
    assert smtp.received == [] and [e["state"] for e in _outbox(root)] == ["queued"]

    port = free_ports(1)["imap"]
    stderr = tmp_path / "serve.err"
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "postline", "serve", str(root),
                                 "--port", str(port)], env=_env(POSTLINE_API_TOKEN=TOKEN),
                                stderr=err, stdout=subprocess.DEVNULL)
    try:
        # no request to the API at all: the mail is sent because serve started
        assert wait_until(lambda: len(smtp.received) == 1 or proc.poll() is not None,
                          timeout=30), stderr.read_text()
        assert proc.poll() is None, stderr.read_text()
        assert wait_until(lambda: port_open(port), timeout=20)
    finally:
        _stop(proc)
    assert b"queued before the restart" in smtp.received[0].content
    assert "EmailService Notify: delivering 1 mail(s) queued before this start" \
        in stderr.read_text()
    [entry] = _outbox(root)
    assert (entry["id"], entry["state"]) == (entry_id, "sent")


def test_run_with_services_delivers_mail_queued_before_it_started(tmp_path, smtp, mail_stack,
                                                                   mailbox_user):
    root = write_project(tmp_path / "proj", host="127.0.0.1", port=smtp.port)
    (root / "notify.py").write_text(
        "def on_message(message, ctx):\n"
        "    ctx.services.Notify.SendAndForget({'To': [{'Address': 'ops@example.test'}],\n"
        "        'From': 'app@example.test', 'Subject': 'seen: ' + message['subject'],\n"
        "        'Body': 'x'})\n")
    (root / "source.yaml").write_text(
        "kind: EmailConnection\nname: Box\nincoming:\n  protocol: imap\n"
        f"  host: {mail_stack.host}\n  port: {mail_stack.ports['imap']}\n  security: none\n"
        f"  user: {mailbox_user.email}\n  credential: {{type: secret, secret: Box.password}}\n"
        "outgoing: {protocol: none}\n---\n"
        "kind: Secret\nname: Box\nvalues: {password: env:BOX_PASSWORD}\n---\n"
        "kind: EmailSource\nname: Inbox\nconnection: Box\npolling: {interval: 3600}\n---\n"
        "kind: Workflow\nname: Alerts\nsource: Inbox\nprocessor: notify.py\n"
        "services: {Notify: Notify}\nsinks: [{type: jsonl, path: out/mails.jsonl}]\n")
    entry_id = _queue_while_nobody_delivers(root)
    assert smtp.received == []

    # the INBOX is empty: the processor never runs, yet the queued mail goes out
    stderr = tmp_path / "run.err"
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "postline", "run", str(root)],
                                env=_env(BOX_PASSWORD=mailbox_user.password), stderr=err,
                                stdout=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: len(smtp.received) == 1 or proc.poll() is not None,
                          timeout=30), stderr.read_text()
        assert proc.poll() is None, stderr.read_text()
    finally:
        _stop(proc, signal.SIGINT)
    assert b"queued before the restart" in smtp.received[0].content
    [entry] = _outbox(root)
    assert (entry["id"], entry["state"]) == (entry_id, "sent")
    assert not (root / "out" / "mails.jsonl").exists() or \
        (root / "out" / "mails.jsonl").read_text() == ""
