"""EmailService behaviour with a scripted sender: retries, outcomes, queue, outbox, throttle."""

from __future__ import annotations

import threading
import time

import pytest
from service_fakes import MSG, FakeSender

from postline.errors import ConfigError, DeliveryError, MessageError, QueueFull
from postline.testing.waits import eventually


def wait_for(cond, timeout=5.0):
    return eventually(cond, timeout, "the engine", interval=0.01)


def test_send_returns_the_result_with_every_recipient(service_factory):
    svc, sender = service_factory()
    msg = {**MSG, "Cc": [{"Address": "bob@example.test"}], "BccList": "eve@example.test"}
    result = svc.Send(msg)
    assert result.message_id.startswith("<") and result.server_reply.startswith("250")
    assert [r.address for r in result.recipients] == ["ann@example.test", "bob@example.test",
                                                      "eve@example.test"]
    assert svc.send is not None and svc.send_and_forget is not None
    env, raw, _ = sender.sent[0]
    assert b"eve@example.test" not in raw


def test_transient_failure_is_retried_and_sent_once(service_factory):
    svc, sender = service_factory(FakeSender(script=["4xx", "drop-before", "ok"]))
    svc.Send(MSG)
    assert sender.attempts == 3 and len(sender.sent) == 1


def test_permanent_failure_is_raised_at_once_with_the_server_text(service_factory):
    svc, sender = service_factory(FakeSender(script=["5xx"]))
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert "554 5.7.1 rejected: spam" in str(err.value)
    assert err.value.retriable is False and sender.attempts == 1


def test_drop_after_final_dot_is_unknown_and_not_retried(service_factory):
    svc, sender = service_factory(FakeSender(script=["drop-after"]))
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert err.value.outcome == "unknown" and not err.value.retriable
    assert "unknown, not retried" in str(err.value)
    assert sender.attempts == 1


def test_transient_failures_give_up_after_max_attempts(service_factory):
    svc, sender = service_factory(FakeSender(script=["4xx"] * 10))
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert err.value.retriable and "gave up after 3 attempt(s)" in str(err.value)
    assert sender.attempts == 3


def test_invalid_message_is_refused_before_queueing(service_factory):
    svc, sender = service_factory()
    with pytest.raises(MessageError) as err:
        svc.SendAndForget({**MSG, "ToList": "x@example.test"})
    assert err.value.field == "To,ToList"
    assert svc.queued() == [] and sender.attempts == 0


def test_size_limit_is_checked_once_known(service_factory):
    svc, sender = service_factory(FakeSender(max_size=2000))
    big = {**MSG, "Attachments": [{"FileName": "a.bin", "Content": "QUFB" * 1000}]}
    with pytest.raises(MessageError) as err:      # limit not known yet: checked at delivery
        svc.Send(big)
    assert err.value.field == "Attachments" and "SIZE limit of 2,000" in str(err.value)
    with pytest.raises(MessageError):              # now known: refused before queueing
        svc.SendAndForget(big)
    assert sender.attempts == 0


def test_smtputf8_local_part_refused_when_server_lacks_it(service_factory):
    svc, sender = service_factory(FakeSender(smtputf8=False))
    svc.Send(MSG)  # learn the capabilities
    with pytest.raises(MessageError) as err:
        svc.SendAndForget({**MSG, "To": [{"Address": "jörg@example.test"}]})
    assert err.value.field == "To" and "SMTPUTF8" in str(err.value)


def test_send_and_forget_is_delivered_and_recorded(service_factory):
    svc, sender = service_factory()
    queued = [svc.SendAndForget({**MSG, "Subject": f"n{i}"}) for i in range(5)]
    assert svc.flush(5)
    entries = {e.id: e for e in svc.queued()}
    assert all(entries[q.id].state == "sent" for q in queued)
    assert entries[queued[0].id].result["server_reply"].startswith("250")
    assert sorted(int(raw.split(b"Subject: n")[1][:1]) for _, raw, _ in sender.sent) == list(range(5))


def test_queue_full_is_a_clear_error(service_factory):
    gate = threading.Event()

    class Stuck(FakeSender):
        async def send(self, *a, **k):
            import asyncio
            while not gate.is_set():
                await asyncio.sleep(0.01)
            return await super().send(*a, **k)

    svc, sender = service_factory(Stuck(), send_queue_size=3, max_connections=1)
    for _ in range(3):
        svc.SendAndForget(MSG)
    with pytest.raises(QueueFull) as err:
        svc.SendAndForget(MSG)
    assert "send queue of EmailService Notify is full (3 of 3" in str(err.value)
    assert err.value.retriable
    gate.set()
    assert svc.flush(5)
    svc.SendAndForget(MSG)  # room again


def test_failed_queued_mail_is_kept_and_retried_on_request(service_factory):
    svc, sender = service_factory(FakeSender(script=["5xx"]))
    q = svc.SendAndForget(MSG)
    assert svc.flush(5)
    [entry] = svc.queued(state="failed")
    assert entry.id == q.id and "554 5.7.1 rejected: spam" in entry.reason
    assert svc.retry(all_failed=True) == 1
    assert svc.flush(5)
    assert svc.queued(state="sent")[0].id == q.id and len(sender.sent) == 1


def test_queued_drop_after_dot_is_unknown_not_resent(service_factory):
    svc, sender = service_factory(FakeSender(script=["drop-after"]))
    svc.SendAndForget(MSG)
    assert svc.flush(5)
    [entry] = svc.queued(state="unknown")
    assert "unknown, not retried" in entry.reason and sender.attempts == 1


def test_many_threads_keep_max_connections_busy(service_factory):
    svc, sender = service_factory(FakeSender(delay=0.02), max_connections=4)
    threads = [threading.Thread(target=svc.Send, args=(MSG,)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sender.sent) == 16 and sender.max_concurrent == 4


def test_bulk_send_and_forget_keeps_max_connections_busy(service_factory):
    svc, sender = service_factory(FakeSender(delay=0.02), max_connections=4)
    for _ in range(20):
        svc.SendAndForget(MSG)
    assert svc.flush(10)
    assert len(sender.sent) == 20 and sender.max_concurrent == 4


def test_send_and_send_and_forget_share_the_throttle(service_factory):
    svc, sender = service_factory(FakeSender(clock=time.monotonic),
                                  throttle={"max_messages": 5, "per": "second"})
    for _ in range(3):
        svc.SendAndForget(MSG)
    for _ in range(4):
        svc.Send(MSG)
    assert svc.flush(5)
    times = sorted(t for _, _, t in sender.sent)
    assert len(times) == 7 and times[5] - times[0] >= 0.99


def test_connection_without_outgoing_is_a_config_error(tmp_path):
    from service_fakes import make_project

    from postline.assets.kinds.connection import EmailConnection
    from postline.service import open_service

    project = make_project(tmp_path)
    project.assets[("EmailConnection", "Out")] = EmailConnection.model_validate({
        "kind": "EmailConnection", "name": "Out",
        "incoming": {"protocol": "imap", "host": "127.0.0.1"}})
    with pytest.raises(ConfigError) as err:
        open_service(project, "Notify")
    assert "has no outgoing smtp" in str(err.value)


def test_closed_service_refuses(service_factory):
    svc, _ = service_factory()
    svc.close()
    with pytest.raises(DeliveryError, match="is closed"):
        svc.Send(MSG)
