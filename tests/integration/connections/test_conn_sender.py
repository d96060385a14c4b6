"""MailSender against Postfix (delivery, partial acceptance) and scripted SMTP faults."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from connhelpers import endpoint_data, outgoing

from postline.errors import DeliveryError
from postline.protocols import Envelope, open_sender
from postline.protocols.smtp import SmtpSender
from postline.testing.faults import FaultServer, smtp_script
from postline.testing.waits import wait_for_mail


def _run(coro):
    return asyncio.run(coro)


@pytest.fixture
def postfix(project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    project.add({"name": "Out", "outgoing": endpoint_data(
        mail_stack, protocol="smtp", security="starttls", credential="secret",
        user=mailbox_user.email)})
    return project


def _wait_for_subject(stack, user, subject, timeout=20.0) -> bytes:
    return wait_for_mail(stack, user, subject, timeout=timeout, imaps=True)


@pytest.mark.stack
def test_send_through_postfix_and_read_back(postfix, mail_stack, mailbox_user):
    subject = f"hello {uuid.uuid4().hex}"
    raw = (f"From: {mailbox_user.email}\r\nTo: {mailbox_user.email}\r\nSubject: {subject}\r\n"
           "\r\n.a line that starts with a dot\r\nbye\r\n").encode()

    async def go():
        async with open_sender(postfix, "Out") as sender:
            assert sender.max_message_size and sender.supports_smtputf8
            return await sender.send(Envelope(sender=mailbox_user.email,
                                              recipients=(mailbox_user.email,)), raw,
                                     message_id="<m1@example.test>")

    result = _run(go())
    assert result.accepted == [mailbox_user.email] and not result.partial
    assert result.message_id == "<m1@example.test>"
    body = _wait_for_subject(mail_stack, mailbox_user, subject)
    assert b"\r\n.a line that starts with a dot\r\nbye\r\n" in body


@pytest.mark.stack
def test_partial_recipient_acceptance_is_reported(postfix, mailbox_user):
    async def go():
        async with open_sender(postfix, "Out") as sender:
            return await sender.send(Envelope(sender=mailbox_user.email, recipients=(
                mailbox_user.email, "broken@example..test")), b"Subject: partial\r\n\r\nx\r\n")

    result = _run(go())
    assert result.partial
    assert result.accepted == [mailbox_user.email]
    assert [(r.address, r.code) for r in result.refused] == [("broken@example..test", 501)]
    assert "Bad recipient address syntax" in result.refused[0].message


@pytest.mark.stack
def test_every_recipient_refused_raises(postfix, mailbox_user):
    async def go():
        async with open_sender(postfix, "Out") as sender:
            with pytest.raises(DeliveryError) as info:
                await sender.send(Envelope(sender=mailbox_user.email,
                                           recipients=("broken@example..test",)), b"x\r\n")
            # the session was RSET and still works
            ok = await sender.send(Envelope(sender=mailbox_user.email,
                                            recipients=(mailbox_user.email,)), b"y\r\n")
            return info.value, ok

    err, ok = _run(go())
    assert "refused every recipient: broken@example..test: 501" in str(err)
    assert err.retriable is False and err.outcome == "rejected"
    assert ok.accepted == [mailbox_user.email]


def test_temporary_refusal_is_retriable():
    refuse = {"busy@x.test": "450 4.2.1 mailbox busy", "gone@x.test": "550 5.1.1 no such user"}
    with FaultServer(smtp_script(refuse=refuse.get)) as srv:
        async def go():
            async with SmtpSender(endpoint=outgoing(port=srv.port, security="none"),
                                  login=None) as s:
                errors = []
                for rcpt in ("busy@x.test", "gone@x.test"):
                    try:
                        await s.send(Envelope(sender="a@x.test", recipients=(rcpt,)), b"x")
                    except DeliveryError as exc:
                        errors.append(exc)
                return errors
        busy, gone = _run(go())
    assert busy.retriable and busy.code == 450 and busy.outcome == "transient"
    assert not gone.retriable and gone.code == 550


@pytest.mark.parametrize("pipelining", [True, False])
def test_partial_acceptance_with_and_without_pipelining(pipelining):
    received: list[bytes] = []
    with FaultServer(smtp_script(refuse=lambda a: "550 5.1.1 nope" if "bad" in a else None,
                                 pipelining=pipelining, received=received)) as srv:
        async def go():
            async with SmtpSender(endpoint=outgoing(port=srv.port, security="none"),
                                  login=None) as s:
                return await s.send(Envelope(sender="a@x.test", recipients=(
                    "bad@x.test", "ok@x.test")), b"Subject: s\n\n..x\n")
        result = _run(go())
    assert result.accepted == ["ok@x.test"]
    assert [r.address for r in result.refused] == ["bad@x.test"]
    assert received == [b"Subject: s\r\n\r\n..x"]


def test_connection_lost_after_final_dot_is_unknown_and_not_retried():
    with FaultServer(smtp_script(drop_after_data=True)) as srv:
        async def go():
            async with SmtpSender(endpoint=outgoing(port=srv.port, security="none"),
                                  login=None) as s:
                await s.send(Envelope(sender="a@x.test", recipients=("b@x.test",)), b"x")
        with pytest.raises(DeliveryError) as info:
            _run(go())
        assert srv.connections == 1  # not retried on a new connection
    assert info.value.outcome == "unknown" and info.value.retriable is False
    assert "unknown whether the server accepted the mail; not retried to avoid a duplicate" \
        in str(info.value)


def test_dropped_idle_connection_is_replaced():
    with FaultServer(smtp_script()) as srv:
        async def go():
            async with SmtpSender(endpoint=outgoing(port=srv.port, security="none"),
                                  login=None) as s:
                env = Envelope(sender="a@x.test", recipients=("b@x.test",))
                await s.send(env, b"one")
                s._free[0]._w.transport.abort()   # as if the server closed the idle session
                await asyncio.sleep(0)
                return await s.send(env, b"two")
        result = _run(go())
        assert result.accepted == ["b@x.test"]
        assert srv.connections == 2


@pytest.mark.stack
def test_parallel_sending_to_smtp_sink(mail_stack):
    ep = outgoing(host=mail_stack.host, port=mail_stack.ports["smtp_sink"], security="none")
    msg = b"Subject: bulk\r\n\r\n" + b"x" * 76 + b"\r\n"

    async def go():
        async with SmtpSender(endpoint=ep, login=None, max_connections=4) as s:
            env = Envelope(sender="a@example.test", recipients=("b@example.test",))
            return await asyncio.gather(*(s.send(env, msg) for _ in range(300)))

    results = _run(go())
    assert len(results) == 300 and all(r.accepted for r in results)


def test_idle_sessions_are_closed_after_idle_timeout():
    with FaultServer(smtp_script()) as srv:
        async def go():
            async with SmtpSender(endpoint=outgoing(port=srv.port, security="none"),
                                  login=None, idle_timeout=0.2) as s:
                await s.send(Envelope(sender="a@x.test", recipients=("b@x.test",)), b"x")
                assert len(s._free) == 1
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while s._free and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                return len(s._free)
        assert _run(go()) == 0
