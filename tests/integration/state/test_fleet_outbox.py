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
