"""The fast paths of Send: batched hand-off, light waiters, the pipelining hint, the plain
text/QP body writer and cheap Message-IDs -- each must give what the slow path gives."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import random
import threading
from email.message import EmailMessage

import pytest
from service_fakes import FakeSender

from postline.errors import DeliveryError
from postline.service.message import normalise
from postline.service.mime import _text_body, new_identity

MSG = {"From": "app@example.test", "To": [{"Address": "ann@example.test"}], "Subject": "s",
       "Body": "hello"}


def _msg(i: int) -> dict:
    return {**MSG, "Subject": f"n{i}", "To": [{"Address": f"u{i}@example.test"}]}


def test_asend_burst_from_one_loop_gets_each_mail_its_own_result(service_factory):
    svc, sender = service_factory(FakeSender(script=["ok"] * 3 + ["5xx"]), max_connections=2)

    async def go():
        return await asyncio.gather(*(svc.asend(_msg(i)) for i in range(200)),
                                    return_exceptions=True)

    results = asyncio.run(go())
    errors = [r for r in results if isinstance(r, DeliveryError)]
    assert len(errors) == 1 and "554 5.7.1 rejected: spam" in str(errors[0])
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == 199 and len({r.message_id for r in ok}) == 199
    for i, r in enumerate(results):
        if not isinstance(r, Exception):
            assert r.accepted == [f"u{i}@example.test"]


def test_asend_from_two_loops_at_once(service_factory):
    svc, sender = service_factory()
    out: dict[int, list] = {}

    def loop(k: int) -> None:
        async def go():
            return await asyncio.gather(*(svc.asend(_msg(100 * k + i)) for i in range(50)))
        out[k] = asyncio.run(go())

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [r.accepted for r in out[0]] == [[f"u{i}@example.test"] for i in range(50)]
    assert [r.accepted for r in out[1]] == [[f"u{100 + i}@example.test"] for i in range(50)]
    assert len(sender.sent) == 100


def test_send_from_many_threads_returns_each_its_own_result(service_factory):
    svc, sender = service_factory(max_connections=3)
    results: dict[int, object] = {}

    def one(i: int) -> None:
        results[i] = svc.Send(_msg(i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(results[i].accepted == [f"u{i}@example.test"] for i in range(64))
    assert len(sender.sent) == 64


def test_send_timeout_says_the_mail_may_still_be_sent(service_factory):
    gate = threading.Event()

    class Stuck(FakeSender):
        async def send(self, *a, **k):
            while not gate.is_set():
                await asyncio.sleep(0.01)
            return await super().send(*a, **k)

    svc, sender = service_factory(Stuck())
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG, timeout=0.1)
    assert "did not finish within 0.1s; the mail may still be sent" in str(err.value)
    assert err.value.outcome == "unknown"
    gate.set()
    assert svc.Send(MSG).accepted == ["ann@example.test"]


def test_send_after_close_is_refused_and_waiting_sends_fail(service_factory):
    gate = threading.Event()

    class Stuck(FakeSender):
        async def send(self, *a, **k):
            while not gate.is_set():
                await asyncio.sleep(0.01)
            return await super().send(*a, **k)

    svc, sender = service_factory(Stuck(), max_connections=1)
    errors: list[Exception] = []

    def one() -> None:
        try:
            svc.Send(MSG)
        except DeliveryError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    svc.close(timeout=0.2)
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)     # nobody waits for ever
    assert len(errors) == 5 and all("closed" in str(e) for e in errors)
    with pytest.raises(DeliveryError, match="EmailService Notify is closed"):
        svc.Send(MSG)


def test_engine_keeps_two_mails_per_session_for_a_pipelining_sender(service_factory):
    class Pipelining(FakeSender):
        sends_per_session = 2

    svc, sender = service_factory(Pipelining(delay=0.02), max_connections=3)
    threads = [threading.Thread(target=svc.Send, args=(MSG,)) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(sender.sent) == 24 and sender.max_concurrent == 6


def _stdlib(text: str) -> tuple[str, bytes]:
    m = EmailMessage(policy=email.policy.SMTP)
    m.set_content(text)
    head, _, body = m.as_bytes().partition(b"\r\n\r\n")
    return m["Content-Transfer-Encoding"], body


@pytest.mark.parametrize("seed", range(4))
def test_plain_body_writer_matches_the_stdlib_byte_for_byte(seed):
    rng = random.Random(seed)
    taken = 0
    for _ in range(1500):
        chars = rng.choice(["ab", "ab ", "a b\t", "ab=", "abü", "a\x0bb", "ab ."])
        lengths = [0, 1, 5, 75, 76, 77, 78, 79, 80, 153, 154, 155, 156, 157, 232, 233, 234]
        lines = ["".join(rng.choice(chars) for _ in range(rng.choice(lengths)))
                 for _ in range(rng.randint(1, 14))]
        text = rng.choice(["\n", "\r\n", "\r"]).join(lines) + rng.choice(["", "\n", "\r\n"])
        got = _text_body(text)
        if got is None:
            continue     # left to the stdlib (8bit or base64)
        taken += 1
        assert got == _stdlib(text), text
    assert taken > 300


def test_message_ids_are_unique_and_renewed_in_forked_children():
    out = normalise(MSG)
    ids = {new_identity(out).message_id for _ in range(5000)}
    assert len(ids) == 5000 and all(i.endswith("@example.test>") for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        os.write(w, new_identity(out).message_id.encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 200).decode()
    os.close(r)
    os.close(w)
    parent = new_identity(out).message_id
    assert child.split(".")[0] != parent.split(".")[0]
    assert email.utils.parsedate_to_datetime(new_identity(out).date) is not None
