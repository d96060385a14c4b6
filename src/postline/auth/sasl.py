"""SASL, shared by IMAP, POP3 and SMTP: pure encoders and decoders, and the OAuth dialogue.

Nothing here does I/O. Each encoder returns the *unencoded* client response (bytes); the
protocol adapter base64-encodes it where its protocol wants that (IMAP's imaplib does it
itself, SMTP and POP3 send ``base64(...)`` on the AUTH line).

:func:`oauth_dialogue` is the XOAUTH2/OAUTHBEARER exchange with its refresh-and-retry-once
rule, as a generator in the manner of httpx's ``Auth.auth_flow``: it yields what it needs
(:class:`NeedToken`, :class:`Start`, :class:`Answer`) and is sent what came back (the token,
a :class:`Challenge` or the :class:`Outcome`). :func:`drive` and :func:`adrive` run it over a
protocol's send-and-read functions, sync and async; an adapter whose library owns the
exchange (imapclient calls back per challenge) steps it by hand.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Generator
from dataclasses import dataclass, field

from postline.errors import AuthError, TokenError

log = logging.getLogger("postline.auth")


def plain(user: str, password: str, *, authzid: str = "") -> bytes:
    """RFC 4616 PLAIN: ``authzid NUL user NUL password``."""
    return f"{authzid}\0{user}\0{password}".encode()


def xoauth2(user: str, token: str) -> bytes:
    """Google/Microsoft XOAUTH2: ``user=U ^A auth=Bearer T ^A ^A``."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def gs2_header(authzid: str | None) -> str:
    """RFC 5801 GS2 header without channel binding; ``=`` and ``,`` escaped in the authzid."""
    if not authzid:
        return "n,,"
    return "n,a=" + authzid.replace("=", "=3D").replace(",", "=2C") + ","


def oauthbearer(user: str, token: str, *, host: str | None = None,
                port: int | None = None) -> bytes:
    """RFC 7628 OAUTHBEARER: ``gs2-header ^A [host=H ^A port=P ^A] auth=Bearer T ^A ^A``."""
    parts = [gs2_header(user)]
    if host:
        parts.append(f"host={host}")
    if port:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {token}")
    return ("\x01".join(parts) + "\x01\x01").encode()


def b64(data: bytes) -> bytes:
    """Base64 without line breaks (``=`` for an empty response, as SMTP/POP3 initial
    responses require)."""
    return base64.b64encode(data) if data else b"="


@dataclass(frozen=True)
class OAuthFailure:
    """What the server said in its XOAUTH2/OAUTHBEARER error challenge."""

    status: str = ""
    scope: str = ""
    schemes: str = ""
    raw: str = ""

    def describe(self) -> str:
        bits = []
        if self.status:
            bits.append(f"status {self.status}")
        if self.scope:
            bits.append(f"scope needed: {self.scope}")
        return ", ".join(bits) or self.raw or "no details"


def decode_error_challenge(challenge: bytes | str) -> OAuthFailure:
    """Parse the base64 JSON error challenge (``{"status":"401","schemes":..,"scope":..}``).

    Accepts the challenge base64-encoded or already decoded; never raises.
    """
    if isinstance(challenge, str):
        challenge = challenge.encode("utf-8", "replace")
    data = challenge.strip()
    if data and not data.startswith(b"{"):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            pass
    text = data.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return OAuthFailure(raw=text[:200])
    if not isinstance(obj, dict):
        return OAuthFailure(raw=text[:200])
    return OAuthFailure(status=str(obj.get("status", "")), scope=str(obj.get("scope", "")),
                        schemes=str(obj.get("schemes", "")), raw=text[:200])


def choose_oauth_mechanism(offered: set[str] | frozenset[str]) -> str | None:
    """XOAUTH2 when offered (widest server support), else OAUTHBEARER, else None."""
    upper = {m.upper() for m in offered}
    for mech in ("XOAUTH2", "OAUTHBEARER"):
        if mech in upper:
            return mech
    return None


# -- the OAuth dialogue ---------------------------------------------------------------------


@dataclass(frozen=True)
class NeedToken:
    """The dialogue needs an access token; ``refresh``: a new one, the last was refused."""

    refresh: bool


@dataclass(frozen=True)
class Start:
    """Send ``AUTH mechanism`` with ``response`` (unencoded) as the initial response."""

    mechanism: str
    response: bytes = field(repr=False)     # carries the token


@dataclass(frozen=True)
class Answer:
    """Answer the server's challenge with ``response`` (unencoded; empty: an empty line)."""

    response: bytes = field(repr=False)


@dataclass(frozen=True)
class Challenge:
    """The server asked for more (IMAP/POP3 ``+``, SMTP 334) with ``data``, as sent."""

    data: bytes | str


@dataclass(frozen=True)
class Outcome:
    """The server's final reply: ``ok`` when it accepted, ``text`` for messages."""

    ok: bool
    text: str = ""


Step = NeedToken | Start | Answer
Reply = Challenge | Outcome
Dialogue = Generator[Step, "str | Reply", str]


def oauth_dialogue(*, offered: Collection[str], user: str, protocol: str, host: str,
                   port: int) -> Dialogue:
    """The XOAUTH2 or OAUTHBEARER exchange (by :func:`choose_oauth_mechanism` among the
    ``offered`` mechanisms) for ``user`` at ``protocol`` server host:port.

    Asks for a token and starts; a challenge after the initial response is the server's
    error report (RFC 7628), answered with an empty response so the final refusal can be
    read. A refusal gets one more try with a refreshed token. Returns the mechanism used.

    Raises AuthError at the first step when no OAuth mechanism is offered; TokenError naming
    the server, the user and what the server said, when the refreshed token is refused too;
    TypeError when sent something it did not ask for.
    """
    mechanism = choose_oauth_mechanism(frozenset(offered))
    if mechanism is None:
        raise AuthError(f"{protocol} server {host}:{port} offers no OAuth mechanism (it "
                        f"offers {' '.join(sorted(offered)) or 'none'})",
                        hint="use credential type secret, or another server")
    last, failure = "", None
    for attempt in (1, 2):
        token = yield NeedToken(refresh=attempt == 2)
        if not isinstance(token, str):
            raise TypeError(f"the OAuth dialogue wants a token, got {type(token).__name__}")
        initial = (xoauth2(user, token) if mechanism == "XOAUTH2"
                   else oauthbearer(user, token, host=host, port=port))
        reply = yield Start(mechanism, initial)
        failure = None
        while isinstance(reply, Challenge):
            failure = failure or decode_error_challenge(reply.data)
            reply = yield Answer(b"")
        if not isinstance(reply, Outcome):
            raise TypeError(f"the OAuth dialogue wants the server's reply, got "
                            f"{type(reply).__name__}")
        if reply.ok:
            return mechanism
        last = reply.text
        log.info("%s %s refused the token (attempt %d): %s", protocol, mechanism, attempt,
                 failure.describe() if failure else last)
    reason = failure.describe() if failure else last
    raise TokenError(f"{protocol} server {host}:{port} rejected the OAuth token for {user} "
                     f"({reason}; server said: {last})",
                     hint="the token may be expired, for another user, or lack the mail "
                          "scope; check user, scopes and the authority's client settings")


def drive(dialogue: Dialogue, *, token: Callable[[bool], str],
          start: Callable[[Start], Reply], answer: Callable[[bytes], Reply]) -> str:
    """Run ``dialogue`` with blocking I/O: ``token(refresh)`` gets a token, ``start`` sends
    the AUTH command and ``answer`` a response, each returning what the server replied.
    Returns what the dialogue returns; raises what it and the callables raise."""
    step = next(dialogue)
    while True:
        got: str | Reply
        if isinstance(step, NeedToken):
            got = token(step.refresh)
        elif isinstance(step, Start):
            got = start(step)
        else:
            got = answer(step.response)
        try:
            step = dialogue.send(got)
        except StopIteration as done:
            mechanism: str = done.value
            return mechanism


async def adrive(dialogue: Dialogue, *, token: Callable[[bool], Awaitable[str]],
                 start: Callable[[Start], Awaitable[Reply]],
                 answer: Callable[[bytes], Awaitable[Reply]]) -> str:
    """:func:`drive` for asyncio: the same steps, each awaited."""
    step = next(dialogue)
    while True:
        got: str | Reply
        if isinstance(step, NeedToken):
            got = await token(step.refresh)
        elif isinstance(step, Start):
            got = await start(step)
        else:
            got = await answer(step.response)
        try:
            step = dialogue.send(got)
        except StopIteration as done:
            mechanism: str = done.value
            return mechanism
