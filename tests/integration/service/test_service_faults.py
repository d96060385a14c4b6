"""Delivery outcomes against a misbehaving SMTP server (postline.testing.smtp_faults)."""

from __future__ import annotations

import pytest
from svc_helpers import write_project

import postline
from postline.errors import DeliveryError
from postline.service import open_service
from postline.testing.smtp_faults import FaultyServer

MSG = {"From": "app@example.test", "To": [{"Address": "ann@example.test"}],
       "BccList": "audit@example.test", "Subject": "fault test", "Body": "hello"}


@pytest.fixture
def faulty(request, tmp_path):
    mode, times = request.param
    with FaultyServer(mode=mode, times=times) as server:
        project = postline.open_project(write_project(tmp_path / "proj", host="127.0.0.1",
                                                      port=server.port))
        svc = open_service(project, "Notify")
        yield server, svc
        svc.close()


@pytest.mark.parametrize("faulty", [("tempfail", 1)], indirect=True)
def test_4xx_then_accept_is_retried_and_sent_once(faulty):
    server, svc = faulty
    result = svc.Send(MSG)
    assert result.server_reply.startswith("250")
    assert server.attempts == 2 and len(server.received) == 1
    assert server.received[0].rcpt_tos == ("ann@example.test", "audit@example.test")
    assert b"audit@example.test" not in server.received[0].content


@pytest.mark.parametrize("faulty", [("reject", 1)], indirect=True)
def test_5xx_is_reported_at_once_with_the_server_text(faulty):
    server, svc = faulty
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert "554 5.7.1 Message rejected: policy violation" in str(err.value)
    assert err.value.retriable is False and err.value.outcome == "rejected"
    assert server.attempts == 1 and server.received == []


@pytest.mark.parametrize("faulty", [("drop-before", 3)], indirect=True)
def test_drop_before_end_of_data_is_retried(faulty):
    server, svc = faulty
    result = svc.Send(MSG)
    assert result.server_reply.startswith("250")
    assert server.data_commands == 4 and len(server.received) == 1


@pytest.mark.parametrize("faulty", [("drop-after", 1)], indirect=True)
def test_drop_after_final_dot_is_unknown_not_retried_not_duplicated(faulty):
    server, svc = faulty
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert err.value.outcome == "unknown" and not err.value.retriable
    assert "not retried" in str(err.value)
    assert len(server.received) == 1 and server.attempts == 1


@pytest.mark.parametrize("faulty", [("drop-after", 1)], indirect=True)
def test_queued_mail_dropped_after_dot_is_listed_as_unknown(faulty):
    server, svc = faulty
    q = svc.SendAndForget(MSG)
    assert svc.flush(10)
    [entry] = svc.queued(state="unknown")
    assert entry.id == q.id and "not retried" in entry.reason
    assert len(server.received) == 1


@pytest.mark.parametrize("faulty", [("tempfail", 1)], indirect=True)
def test_queued_mail_with_4xx_is_retried_and_sent_once(faulty):
    server, svc = faulty
    q = svc.SendAndForget(MSG)
    assert svc.flush(10)
    [entry] = svc.queued(state="sent")
    assert entry.id == q.id and entry.attempts == 2
    assert len(server.received) == 1
