"""SMTP sender: the next mail's envelope pipelined behind the current body (RFC 2920 3.1),
and what each mail's outcome is when the server fails in the middle of such a pair."""

from __future__ import annotations

import asyncio

import pytest
from connhelpers import outgoing

from postline.errors import DeliveryError
from postline.protocols import Envelope
from postline.protocols.smtp import SmtpSender
from postline.testing.smtp_faults import FaultyServer


def _sender(srv: FaultyServer, max_connections: int = 1) -> SmtpSender:
    return SmtpSender(endpoint=outgoing(port=srv.port, security="none"), login=None,
                      max_connections=max_connections)


def _mail(i: int) -> tuple[Envelope, bytes]:
    return (Envelope(sender="app@x.test", recipients=(f"user{i}@x.test",)),
            f"Subject: mail {i}\r\nMessage-ID: <m{i}@x.test>\r\n\r\nbody {i}\r\n".encode())


async def _send_all(s: SmtpSender, n: int) -> list:
    return await asyncio.gather(*(s.send(*_mail(i), message_id=f"<m{i}@x.test>")
                                  for i in range(n)), return_exceptions=True)


@pytest.mark.parametrize("pipelining", [True, False])
def test_waiting_mails_ride_behind_the_previous_body_each_sent_once(pipelining):
    with FaultyServer(pipelining=pipelining) as srv:
        async def go():
            async with _sender(srv) as s:
                return await _send_all(s, 20)
        results = asyncio.run(go())
    assert [r.message_id for r in results] == [f"<m{i}@x.test>" for i in range(20)]
    assert all(r.accepted == [f"user{i}@x.test"] for i, r in enumerate(results))
    assert sorted(m.rcpt_tos[0] for m in srv.received) == sorted(f"user{i}@x.test"
                                                                  for i in range(20))
    assert all(m.content.endswith(f"body {m.rcpt_tos[0][4:-7]}\r\n".encode())
               for m in srv.received)
    # all but the first, give or take how the server's reads split; none without PIPELINING
    assert srv.pipelined >= 15 if pipelining else srv.pipelined == 0


def test_rejected_body_does_not_disturb_the_pipelined_next_mail():
    # the first end of DATA gets 451; the next mail's commands are already behind it, so
    # no RSET may be written (it would land inside the next mail's DATA)
    with FaultyServer(mode="tempfail", times=1) as srv:
        async def go():
            async with _sender(srv) as s:
                return await _send_all(s, 3)
        first, *rest = asyncio.run(go())
    assert isinstance(first, DeliveryError) and first.code == 451 and first.retriable
    assert [r.accepted for r in rest] == [["user1@x.test"], ["user2@x.test"]]
    assert [m.content for m in srv.received] == [_mail(1)[1], _mail(2)[1]]
    assert srv.pipelined >= 1


def test_drop_after_dot_is_unknown_and_the_pipelined_mail_goes_on_a_new_session():
    with FaultyServer(mode="drop-after", times=1) as srv:
        async def go():
            async with _sender(srv) as s:
                return await _send_all(s, 3)
        first, *rest = asyncio.run(go())
    assert isinstance(first, DeliveryError) and first.outcome == "unknown"
    assert not first.retriable
    assert [r.accepted for r in rest] == [["user1@x.test"], ["user2@x.test"]]
    # the server kept mail 0 (the client cannot know); 1 and 2 arrived once each
    assert sorted(m.rcpt_tos[0] for m in srv.received) == [
        "user0@x.test", "user1@x.test", "user2@x.test"]
    assert srv.pipelined >= 1 and srv.attempts == 3


def test_cancelled_pipelined_mail_is_not_delivered():
    with FaultyServer(mode="slow", delay=0.3) as srv:
        async def go():
            async with _sender(srv) as s:
                first = asyncio.create_task(s.send(*_mail(0)))
                await asyncio.sleep(0)          # mail 0 takes the only session
                second = asyncio.create_task(s.send(*_mail(1)))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while s._waiting and loop.time() < deadline:  # until mail 1 rides behind 0
                    await asyncio.sleep(0.005)
                second.cancel()
                done = await first
                with pytest.raises(asyncio.CancelledError):
                    await second
                third = await s.send(*_mail(2))     # the sender still works
                return done, third
        done, third = asyncio.run(go())
    assert done.accepted == ["user0@x.test"] and third.accepted == ["user2@x.test"]
    assert [m.rcpt_tos for m in srv.received] == [("user0@x.test",), ("user2@x.test",)]


@pytest.mark.parametrize("n, conns", [(1, 1), (7, 3), (40, 4)])
def test_slots_never_exceed_max_connections(n, conns):
    with FaultyServer() as srv:
        async def go():
            async with _sender(srv, max_connections=conns) as s:
                results = await _send_all(s, n)
                return results, s._in_use, len(s._free)
        results, in_use, free = asyncio.run(go())
    assert all(r.accepted for r in results) and len(srv.received) == n
    assert in_use == 0 and 1 <= free <= conns
