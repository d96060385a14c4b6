"""SendAndForget against a server that never takes the mail: every attempt is in the outbox
row, the backoff doubles (2, 4, 8, 16 s with the defaults), and after ``max_attempts`` the
mail ends ``failed`` with the last reason -- also when the process restarts in between.

The service runs on an injected clock that the test moves forward, so no test waits for a
real backoff.
"""

from __future__ import annotations

import json
import threading

import pytest

import postline
from postline.cli import main
from postline.service import open_service
from postline.testing.ports import free_ports, wait_until
from postline.testing.smtp_faults import FaultyServer

MSG = {"From": "app@example.test", "To": [{"Address": "ann@example.test"}],
       "Subject": "nightly report", "Body": "hello"}


class Clock:
    """A wall clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def _project(root, port: int):
    """A project whose service uses the documented retry defaults (5 attempts, 2 s .. 300 s)."""
    root.mkdir()
    (root / "assets.yaml").write_text(
        "kind: EmailConnection\nname: Out\nincoming: {protocol: none}\noutgoing:\n"
        f"  protocol: smtp\n  host: 127.0.0.1\n  port: {port}\n  security: none\n"
        "  connect_timeout: 5\n  credential: {type: none}\n---\n"
        "kind: EmailService\nname: Notify\nconnection: Out\n")
    return root


def _row(svc, entry_id):
    return svc.outbox.get(entry_id)


def _wait_attempts(svc, entry_id, n):
    assert wait_until(lambda: _row(svc, entry_id).attempts >= n
                      and _row(svc, entry_id).state in ("queued", "failed"), timeout=20), \
        _row(svc, entry_id)
    return _row(svc, entry_id)


@pytest.fixture
def tempfail_server():
    with FaultyServer(mode="tempfail", times=1000) as server:
        yield server


@pytest.mark.parametrize("server", ["unreachable", "tempfail"])
def test_queued_mail_backs_off_and_ends_failed(server, tmp_path, request, capsys):
    if server == "unreachable":
        port = free_ports(1)["imap"]     # nothing listens there: connection refused
        reason = f"127.0.0.1:{port}"
    else:
        port = request.getfixturevalue("tempfail_server").port
        reason = "451 4.3.0 Temporary failure, try again later"
    root = _project(tmp_path / "proj", port)
    clock = Clock()
    svc = open_service(postline.open_project(root), "Notify", clock=clock, poll_interval=0.02)
    queued = svc.SendAndForget(MSG)

    for attempt, backoff in enumerate([2, 4, 8, 16], start=1):
        row = _wait_attempts(svc, queued.id, attempt)
        assert (row.state, row.attempts) == ("queued", attempt)
        assert row.next_attempt_at == clock() + backoff      # doubled each time
        assert reason in row.reason
        if attempt == 2:
            # a restart keeps the count: the next process goes on where this one stopped
            svc.close()
            svc = open_service(postline.open_project(root), "Notify", clock=clock,
                               poll_interval=0.02)
            assert _row(svc, queued.id).attempts == 2
        clock.advance(backoff)

    row = _wait_attempts(svc, queued.id, 5)
    assert (row.state, row.attempts) == ("failed", 5)
    assert row.reason.startswith("gave up after 5 attempt(s): ") and reason in row.reason
    svc.close()

    # what the operator sees
    assert main(["outbox", "list", str(root), "Notify", "--state", "failed", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["state"], listed["attempts"]) == (queued.id, "failed", 5)
    assert listed["reason"] == row.reason
