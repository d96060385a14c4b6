"""The OAuth SASL dialogue on its own: no I/O, the server's replies are sent in by hand."""

from __future__ import annotations

import asyncio
import base64

import pytest

from postline.auth import sasl
from postline.errors import AuthError, TokenError

ERROR = base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}')


def dialogue(*offered: str) -> sasl.Dialogue:
    return sasl.oauth_dialogue(offered=offered or ("PLAIN", "XOAUTH2", "OAUTHBEARER"),
                               user="u@x", protocol="SMTP", host="mail.test", port=587)


def test_accepted_at_once_with_the_cached_token():
    d = dialogue()
    assert next(d) == sasl.NeedToken(refresh=False)
    step = d.send("tok")
    assert step == sasl.Start("XOAUTH2", sasl.xoauth2("u@x", "tok"))
    with pytest.raises(StopIteration) as done:
        d.send(sasl.Outcome(ok=True, text="235 ok"))
    assert done.value.value == "XOAUTH2"


def test_oauthbearer_names_host_and_port():
    d = dialogue("PLAIN", "OAUTHBEARER")
    next(d)
    assert d.send("tok").response == sasl.oauthbearer("u@x", "tok", host="mail.test",
                                                       port=587)


def test_a_refused_token_is_refreshed_once_and_then_accepted():
    d = dialogue()
    next(d)
    d.send("old")
    # the error challenge is answered with an empty response (RFC 7628 section 3.2.3)
    assert d.send(sasl.Challenge(ERROR)) == sasl.Answer(b"")
    assert d.send(sasl.Outcome(ok=False, text="535 no")) == sasl.NeedToken(refresh=True)
    assert d.send("new") == sasl.Start("XOAUTH2", sasl.xoauth2("u@x", "new"))
    with pytest.raises(StopIteration):
        d.send(sasl.Outcome(ok=True))


def refused_once(first: str) -> sasl.Dialogue:
    """A dialogue whose first token was refused with ``first`` and that started again."""
    d = dialogue()
    next(d)
    d.send("old")
    d.send(sasl.Outcome(ok=False, text=first))
    d.send("new")
    return d


def test_the_second_refusal_is_a_clear_token_error():
    d = refused_once("535 first")
    d.send(sasl.Challenge(ERROR))
    with pytest.raises(TokenError) as err:
        d.send(sasl.Outcome(ok=False, text="535 5.7.8 no"))
    assert isinstance(err.value, AuthError)
    assert err.value.message == ("SMTP server mail.test:587 rejected the OAuth token for u@x "
                                 "(status 401, scope needed: mail; server said: 535 5.7.8 no)")
    assert "scope" in err.value.hint
    assert "new" not in str(err.value) and "old" not in str(err.value)


def test_without_an_error_challenge_the_server_text_is_the_reason():
    d = refused_once("-ERR nope")
    with pytest.raises(TokenError, match=r"\(-ERR nope; server said: -ERR nope\)"):
        d.send(sasl.Outcome(ok=False, text="-ERR nope"))


def test_no_oauth_mechanism_offered_is_an_auth_error_before_any_token():
    d = dialogue("PLAIN", "LOGIN")
    with pytest.raises(AuthError) as err:
        next(d)
    assert not isinstance(err.value, TokenError)
    assert err.value.message == ("SMTP server mail.test:587 offers no OAuth mechanism "
                                 "(it offers LOGIN PLAIN)")


def test_the_token_is_not_in_the_repr_of_a_step():
    assert "secret-token" not in repr(sasl.Start("XOAUTH2", sasl.xoauth2("u", "secret-token")))


def test_sending_the_wrong_thing_is_a_type_error():
    d = dialogue()
    next(d)
    with pytest.raises(TypeError, match="wants a token"):
        d.send(sasl.Outcome(ok=True))


class Server:
    """A scripted server for the drivers: replies in order, records what it got."""

    def __init__(self, *replies: sasl.Reply) -> None:
        self.replies = list(replies)
        self.got: list[tuple[str, bytes]] = []
        self.tokens: list[bool] = []

    def token(self, refresh: bool) -> str:
        self.tokens.append(refresh)
        return "fresh" if refresh else "cached"

    def start(self, step: sasl.Start) -> sasl.Reply:
        self.got.append((step.mechanism, step.response))
        return self.replies.pop(0)

    def answer(self, data: bytes) -> sasl.Reply:
        self.got.append(("answer", data))
        return self.replies.pop(0)


def test_drive_runs_the_dialogue_over_blocking_calls():
    srv = Server(sasl.Challenge(ERROR), sasl.Outcome(ok=False, text="no"),
                 sasl.Outcome(ok=True))
    assert sasl.drive(dialogue(), token=srv.token, start=srv.start,
                      answer=srv.answer) == "XOAUTH2"
    assert srv.tokens == [False, True]
    assert srv.got == [("XOAUTH2", sasl.xoauth2("u@x", "cached")), ("answer", b""),
                       ("XOAUTH2", sasl.xoauth2("u@x", "fresh"))]


def test_adrive_is_the_same_for_asyncio():
    srv = Server(sasl.Outcome(ok=False, text="no"), sasl.Outcome(ok=False, text="no"))

    async def token(refresh: bool) -> str:
        return srv.token(refresh)

    async def start(step: sasl.Start) -> sasl.Reply:
        return srv.start(step)

    async def answer(data: bytes) -> sasl.Reply:
        return srv.answer(data)

    with pytest.raises(TokenError, match="rejected the OAuth token for u@x"):
        asyncio.run(sasl.adrive(dialogue(), token=token, start=start, answer=answer))
    assert srv.tokens == [False, True]
