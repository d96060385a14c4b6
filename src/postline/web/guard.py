"""What stands between the network and ``postline serve``.

* :class:`Guard` (ASGI middleware, outermost but for Starlette's error handler): checks the
  bearer token of ``/api/services/...`` *before* any of the request body is read, refuses a
  ``Content-Length`` over the limit at once, and counts the body as it arrives (chunked
  requests too), so neither an unauthenticated client nor a big upload can make the server
  hold more than the limit. Refusals made before the body was read close the connection,
  so the server stops receiving the rest.
* :class:`FailedLogins`: per client address, a few failures are free; after that every
  further failure locks the address out for twice as long as the last (1 s, 2 s, 4 s, ...
  up to ``max_lockout``), answered with 429 and ``Retry-After``. Failures are logged with the
  address, never with what was tried.
* CSRF (console forms that change something): a per-session token (an HMAC of the session
  id under a key made at start, so it ends with the session) in every form, cookies sent
  ``SameSite=Strict``, and :func:`same_origin`: a request whose ``Origin`` (or ``Referer``)
  names another site is refused whatever it carries.
* :class:`Sessions`: console sessions are random ids (``secrets.token_urlsafe``) kept in
  server memory, removed on logout, and ending after ``session_idle`` seconds without use or
  ``session_max`` seconds after login, whichever comes first (a restart ends them all).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("postline.web")

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ServeLimits:
    """The limits of ``postline serve`` (docs/operations.md, "Security")."""

    max_body: int = 25 * MIB            # /api/services bodies (``--max-body-mb``)
    max_small_body: int = 16 * 1024     # every other request (the login form, logout)
    session_idle: float = 30 * 60       # a console session ends after 30 min unused ...
    session_max: float = 12 * 3600      # ... and 12 h after login in any case
    max_sessions: int = 1000
    failures_allowed: int = 5           # failures from one address before the back-off
    failure_window: float = 15 * 60     # a failure counts this long
    max_lockout: float = 15 * 60


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes its limit: an HTTPException, so FastAPI
    lets it through its body parsing and the app's handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body is over the limit of "
                         f"{_size(limit)}")
        self.limit = limit


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB else f"{n // 1024} KiB"


def error_body(error: str, kind: str, *, retriable: bool = False,
               field: str | None = None) -> dict:
    """The JSON error shape of the API (see :mod:`postline.web.app`)."""
    return {"error": error, "field": field, "retriable": retriable, "outcome": None,
            "code": None, "type": kind}


def too_large_response(exc: BodyTooLarge) -> JSONResponse:
    """The 413 answer; closes the connection so the rest of the body is not received."""
    return JSONResponse(error_body(exc.detail, "ContentTooLarge", field="message"),
                        status_code=413, headers={"Connection": "close"})


class FailedLogins:
    """Failed logins and bad bearer tokens per client address, with an exponential lock-out."""

    def __init__(self, *, limits: ServeLimits, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        self._limits = limits
        self._clock = clock
        self._max_clients = max_clients
        self._by_client: dict[str, tuple[int, float, float]] = {}  # n, last, locked until

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again (rounded up), or None when it may now."""
        entry = self._by_client.get(client)
        if entry is None:
            return None
        wait = entry[2] - self._clock()
        return math.ceil(wait) if wait > 0 else None

    def failed(self, client: str, what: str) -> None:
        """Count a failure of ``client`` and log it (``what`` never holds what was tried)."""
        now, lim = self._clock(), self._limits
        n, last, _ = self._by_client.get(client, (0, 0.0, 0.0))
        if now - last > lim.failure_window:
            n = 0
        n += 1
        locked = now + min(lim.max_lockout, 2.0 ** (n - lim.failures_allowed)) \
            if n >= lim.failures_allowed else 0.0
        if client not in self._by_client and len(self._by_client) >= self._max_clients:
            self._forget_old(now)
        self._by_client[client] = (n, now, locked)
        tail = f"; locked out for {math.ceil(locked - now)}s" if locked else ""
        log.warning("serve: %s from %s (%d failure(s) in a row%s)", what, client, n, tail)

    def succeeded(self, client: str) -> None:
        """Forget the failures of ``client``."""
        self._by_client.pop(client, None)

    def _forget_old(self, now: float) -> None:
        window = self._limits.failure_window
        for client, (_, last, locked) in list(self._by_client.items()):
            if now - last > window and locked <= now:
                del self._by_client[client]
        while len(self._by_client) >= self._max_clients:   # still full: the oldest go
            del self._by_client[next(iter(self._by_client))]


class Sessions:
    """Console sessions: random ids in memory with idle and absolute expiry."""

    def __init__(self, *, limits: ServeLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._by_id: dict[str, tuple[float, float]] = {}   # id -> (created, last used)

    def create(self) -> str:
        """A new session id (43 URL-safe characters, 256 random bits)."""
        now = self._clock()
        if len(self._by_id) >= self._limits.max_sessions:
            self._expire(now)
            while len(self._by_id) >= self._limits.max_sessions:
                del self._by_id[next(iter(self._by_id))]     # the oldest login goes
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (now, now)
        return sid

    def valid(self, sid: str) -> bool:
        """True when ``sid`` is a live session (and marks it used); an expired one is removed."""
        entry = self._by_id.get(sid) if sid else None
        if entry is None:
            return False
        now = self._clock()
        if self._expired(entry, now):
            del self._by_id[sid]
            return False
        self._by_id[sid] = (entry[0], now)
        return True

    def end(self, sid: str) -> None:
        """Remove ``sid`` (logout); unknown ids are ignored."""
        self._by_id.pop(sid, None)

    def _expired(self, entry: tuple[float, float], now: float) -> bool:
        created, used = entry
        return now - used > self._limits.session_idle or \
            now - created > self._limits.session_max

    def _expire(self, now: float) -> None:
        for sid, entry in list(self._by_id.items()):
            if self._expired(entry, now):
                del self._by_id[sid]


def same_origin(scope: dict) -> bool:
    """False when the request's ``Origin`` (or, without one, its ``Referer``) is another site
    than the one it was sent to; True when it matches or the browser sent neither."""
    from urllib.parse import urlsplit

    headers = {k: v.decode("latin-1") for k, v in scope["headers"]
               if k in (b"origin", b"referer", b"host")}
    said = headers.get(b"origin") or headers.get(b"referer")
    if not said:
        return True
    if said == "null":   # a sandboxed frame, a file: page, a redirect across sites
        return False
    parts = urlsplit(said)
    scheme = scope.get("scheme", "http")
    return parts.scheme == scheme and parts.netloc == headers.get(b"host", "")


def client_of(scope: dict) -> str:
    """The client's address as the server saw it (after a trusted proxy's X-Forwarded-For)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


class Guard:
    """The token, the limits, the failure counter and the sessions of one ``serve``
    (the app is wrapped with ``app.add_middleware(GuardMiddleware, guard=guard)``)."""

    API_PREFIX = "/api/services/"

    def __init__(self, *, token: str, limits: ServeLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._expected = token.encode()
        self.limits = limits or ServeLimits()
        self.failures = FailedLogins(limits=self.limits, clock=clock)
        self.sessions = Sessions(limits=self.limits, clock=clock)
        self._csrf_key = secrets.token_bytes(32)

    def csrf_token(self, sid: str) -> str:
        """The CSRF token of session ``sid`` (stable for the session, useless without it)."""
        return hmac.new(self._csrf_key, sid.encode(), "sha256").hexdigest()

    def csrf_ok(self, sid: str, given: str) -> bool:
        """Whether ``given`` is the CSRF token of the live session ``sid``."""
        return bool(sid) and hmac.compare_digest(self.csrf_token(sid), given or "")

    def token_ok(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the API token."""
        return hmac.compare_digest(given.encode(), self._expected)

    def bearer_ok(self, authorization: str, client: str, what: str) -> bool:
        """True when ``authorization`` is ``Bearer <the token>``; a wrong token given counts
        as a failure of ``client`` (a missing header does not: nothing was guessed)."""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(given.strip()):
            return True
        if authorization:
            self.failures.failed(client, f"bad bearer token for {what}")
        return False

    def limit_for(self, path: str) -> int:
        """The body limit of a request to ``path``."""
        return self.limits.max_body if path.startswith(self.API_PREFIX) else \
            self.limits.max_small_body


class GuardMiddleware:
    """Pure ASGI middleware: auth and size checks before the body is read (see module doc)."""

    def __init__(self, app: Any, *, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        guard, path = self.guard, scope["path"]
        headers = {k: v for k, v in scope["headers"] if k in (b"authorization",
                                                               b"content-length")}
        if path.startswith(Guard.API_PREFIX):
            client = client_of(scope)
            wait = guard.failures.retry_after(client)
            if wait is not None:
                return await _refuse(scope, send, 429, error_body(
                    f"too many failed logins from {client}; try again in {wait}s",
                    "TooManyFailures", retriable=True), {"Retry-After": str(wait)})
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if not guard.bearer_ok(auth, client, f"{scope['method']} {path}"):
                return await _refuse(scope, send, 401, error_body(
                    "missing or wrong bearer token" if auth else
                    "this API needs 'Authorization: Bearer <token>'", "Unauthorized"),
                    {"WWW-Authenticate": "Bearer"})
            guard.failures.succeeded(client)
        limit = guard.limit_for(path)
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = too_large_response(BodyTooLarge(limit))
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _refuse(scope: dict, send: Callable, status: int, body: dict,
                  headers: dict[str, str]) -> None:
    # the body was not read: close, so the server does not go on receiving it
    response = JSONResponse(body, status_code=status, headers={**headers, "Connection": "close"})
    await response(scope, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.disconnect"}
