"""The outbox on PostgreSQL: SendAndForget from any instance, each mail delivered once by
whichever instance claims it, the throttle held for the whole fleet."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

import postline
from postline.state.pg_outbox import FleetWindow, LostClaim, PostgresOutbox
from postline.state.postgres import open_pool, target_of
from postline.state.stores import open_outbox

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "service"))
from service_fakes import FakeSender  # noqa: E402  (records what it is given to send)

SERVICE = """
---
kind: EmailConnection
name: Out
outgoing: {protocol: smtp, host: 127.0.0.1, port: 2525, security: none}
---
kind: EmailService
name: Notify
connection: Out
retry: {max_attempts: 3, min_backoff: 0.01, max_backoff: 0.05}
"""


def _msg(i: int) -> dict:
    return {"From": "Reports <reports@example.test>", "To": [{"Address": "ann@example.test"}],
            "Subject": f"Hello {i}", "Body": "Hi Ann"}


@pytest.fixture
def two_instances(store_project):
    """The same project (one StateStore) opened twice, each with its own state directory:
    two instances of a fleet in one test process."""
    root = store_project(extra=SERVICE)
    a = postline.open_project(root, environ={"POSTLINE_STATE_DIR": str(root / "a")})
    b = postline.open_project(root, environ={"POSTLINE_STATE_DIR": str(root / "b")})
    return a, b


def test_rows_are_claimed_by_one_deliverer_and_a_lost_claim_sends_nothing(two_instances):
    a, b = two_instances
    oa, ob = open_outbox(a), open_outbox(b)
    try:
        assert isinstance(oa, PostgresOutbox)
        ids = [oa.enqueue(service="Notify", message=_msg(i), message_id=f"<{i}@x>",
                          date="d", summary=f"Hello {i}", limit=100) for i in range(10)]
        got_a = oa.due("Notify", limit=4)
        got_b = ob.due("Notify", limit=100)
        assert {e.id for e in got_a} | {e.id for e in got_b} == set(ids)
        assert not {e.id for e in got_a} & {e.id for e in got_b}
        ob.mark(got_b[0].id, "sending", attempt=True)
        with pytest.raises(LostClaim):                  # b's row: a must not send it
            oa.mark(got_b[0].id, "sending", attempt=True)
        oa.mark(got_b[0].id, "unknown", reason="x")     # ... nor change its state
        assert ob.get(got_b[0].id).state == "sending"
        assert ob.list("Notify", state="queued")[0].state == "queued"    # outbox list works
        assert ob.counts("Notify")["queued"] == 9
    finally:
        oa.close()
        ob.close()


def test_two_instances_drain_one_backlog_each_mail_once(two_instances):
    from postline.service import open_service

    a, b = two_instances
    sa, sb = FakeSender(delay=0.005), FakeSender(delay=0.005)
    first = open_service(a, "Notify", sender_factory=lambda: sa, poll_interval=0.05)
    for i in range(40):
        first.SendAndForget(_msg(i))
    second = open_service(b, "Notify", sender_factory=lambda: sb, poll_interval=0.05)
    try:
        deadline = time.monotonic() + 30
        while first.outbox.counts("Notify")["sent"] < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        subjects = [raw for _, raw, _ in sa.sent + sb.sent]
        assert len(subjects) == 40                       # none twice, none lost
        assert first.outbox.counts("Notify")["sent"] == 40
    finally:
        first.close()
        second.close()


def test_the_throttle_holds_for_the_whole_fleet(two_instances):
    a, _ = two_instances
    target = target_of(a)
    open_outbox(a).close()                               # the schema
    now = [1000.0]
    pools = [open_pool(target, max_size=2) for _ in range(2)]
    try:
        windows = [FleetWindow(pool=p, schema=target.schema, service="Notify", limit=3,
                               window=60.0, clock=lambda: now[0]) for p in pools]
        took = []
        barrier = threading.Barrier(6)

        def take(w):
            barrier.wait()
            took.append(w.try_take())
        threads = [threading.Thread(target=take, args=(windows[i % 2],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(took)[:3] == [0.0, 0.0, 0.0] and all(d > 0 for d in sorted(took)[3:])
        assert windows[1].try_take() == pytest.approx(60.0)   # full for 60 s, either instance
        now[0] += 60.0
        assert windows[0].try_take() == 0.0
    finally:
        for p in pools:
            p.close()


def test_two_instances_deliver_a_backlog_through_postfix_each_mail_once(
        store_project, mail_stack):
    """The same through the stack's real Postfix into Dovecot: every queued mail arrives
    once in the recipient's INBOX."""
    import imaplib

    from postline.service import open_service
    from postline.testing.info import MailUser

    sender, reader = MailUser.fresh("fleetsender"), MailUser.fresh("fleetreader")
    root = store_project(extra=f"""
---
kind: Secret
name: Mail
values: {{password: env:FLEET_SENDER_PW}}
---
kind: EmailConnection
name: Out
outgoing: {{protocol: smtp, host: {mail_stack.host}, port: {mail_stack.ports["smtp"]},
           security: starttls, ca_file: {mail_stack.ca_file}, user: {sender.email},
           credential: {{type: secret, secret: Mail.password}}}}
---
kind: EmailService
name: Notify
connection: Out
""")
    env = {"FLEET_SENDER_PW": sender.password}
    a = postline.open_project(root, environ={**env, "POSTLINE_STATE_DIR": str(root / "a")})
    b = postline.open_project(root, environ={**env, "POSTLINE_STATE_DIR": str(root / "b")})
    first = open_service(a, "Notify", poll_interval=0.05)
    second = open_service(b, "Notify", poll_interval=0.05)
    try:
        for i in range(20):
            (first if i % 2 else second).SendAndForget(
                {"From": sender.email, "To": [{"Address": reader.email}],
                 "Subject": f"fleet {i}", "Body": "hi"})
        deadline = time.monotonic() + 60
        while first.outbox.counts("Notify")["sent"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.outbox.counts("Notify") == {"queued": 0, "sending": 0, "sent": 20,
                                                 "failed": 0, "unknown": 0}
    finally:
        first.close()
        second.close()
    subjects: list[str] = []
    deadline = time.monotonic() + 30
    while len(subjects) < 20 and time.monotonic() < deadline:
        with imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"]) as imap:
            imap.login(reader.email, reader.password)
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "ALL")
            subjects = []
            for n in data[0].split():
                _, msg = imap.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                subjects.append(msg[0][1].decode().strip().removeprefix("Subject: "))
        time.sleep(0.1)
    assert sorted(subjects) == sorted(f"fleet {i}" for i in range(20))   # each once
