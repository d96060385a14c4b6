"""The HTTP side of Microsoft Graph: one session per mailbox, shared by reader and sender.

:class:`GraphSession` wraps an ``httpx.Client`` and adds what every Graph call needs:

* the bearer token from an injected :class:`~postline.auth.credentials.TokenProvider`; after a
  401 the token is refreshed once (``force_refresh=True``), a second 401 is an AuthError;
* ``Prefer: IdType="ImmutableId"`` on every request, so message ids survive moves;
* throttling: 429 and 503 are retried after ``Retry-After`` (a number of seconds, fractional
  as in Microsoft's own sample ``2.128``, or an HTTP date), 504 only for idempotent requests
  (the SDKs' retry handler retries 429, 503 and 504; a POST such as sendMail or move may
  have happened, so its 504 goes to the caller); bounded: at most ``max_retries`` times and
  never longer than ``max_wait`` seconds per wait;
* at most ``max_concurrent`` (default 4) requests in flight per *app* (client id) and Graph
  host in this process, whatever the number of mailboxes, readers and senders: Outlook's
  concurrency limit counts per app (https://learn.microsoft.com/en-us/graph/throttling-limits
  #outlook-service-limits, "Application is over its MailboxConcurrency limit");
* TLS through :func:`postline.tls.client_context` (the connection's ``ca_file`` and
  ``check_server_identity``) and ``trust_env=False`` (no proxy or CA bundle from the
  environment).

Errors are told apart by Graph's ``error.code`` (https://learn.microsoft.com/en-us/graph/errors),
never by message text: :func:`graph_error_of`, :func:`sync_state_lost`,
:func:`mailbox_unusable`. The pure helpers are unit-tested alone.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from postline import tls
from postline.errors import (
    AuthError,
    ConnectError,
    ConnectTimeout,
    PostlineError,
    ProtocolError,
    TokenError,
)
from postline.retry import backoff, retry_after
from postline.trace import NULL_TRACE, Trace

log = logging.getLogger("postline.graph")

MAX_CONCURRENT_PER_APP = 4
RETRY_STATUSES = frozenset({429, 503})
# 504 is retried only where repeating cannot do a thing twice (the SDKs retry it always)
IDEMPOTENT_RETRY_STATUSES = frozenset({504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH"})  # PATCH: absolute values
# "a 40X-series error with codes such as syncStateNotFound" (delta query overview,
# https://learn.microsoft.com/en-us/graph/delta-query-overview); 410 Gone for Outlook items
SYNC_STATE_LOST_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
# the mailbox itself cannot be used: not found, not licensed for Exchange Online, on-premises
MAILBOX_UNUSABLE_CODES = frozenset({"mailboxnotenabledforrestapi", "errorinvaliduser",
                                    "resourcenotfound", "mailboxnotfound"})
_SLOTS: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How throttled requests (429/503) are retried."""

    max_retries: int = 4
    max_wait: float = 120.0        # a longer Retry-After is not waited for: the call fails
    default_wait: float = 2.0      # without Retry-After; doubles per attempt


def graph_error_of(body: bytes | str) -> tuple[str, str]:
    """``(code, message)`` from Graph's error body ``{"error": {"code", "message"}}``;
    ``("", "")`` when the body is not one. The message is cut to one line of 300 chars."""
    try:
        err = json.loads(body or b"{}").get("error") or {}
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(err, dict):
        return "", ""
    message = str(err.get("message") or "").splitlines()
    return str(err.get("code") or ""), (message[0][:300] if message else "")


def error_code(resp: httpx.Response) -> str:
    """Graph's ``error.code`` of a read response, lower-cased ('' when there is none)."""
    return graph_error_of(resp.content)[0].lower()


def sync_state_lost(resp: httpx.Response) -> bool:
    """Whether a delta answer means "start the sync over": 410 Gone, or any 4xx whose
    ``error.code`` says the sync state is unknown (400 ``syncStateNotFound`` ...)."""
    if resp.status_code == 410:
        return True
    return 400 <= resp.status_code < 500 and error_code(resp) in SYNC_STATE_LOST_CODES


def mailbox_unusable(resp: httpx.Response) -> bool:
    """Whether Graph says the mailbox itself cannot be used (by ``error.code``)."""
    return resp.status_code in (400, 404) and error_code(resp) in MAILBOX_UNUSABLE_CODES


def describe(resp: httpx.Response) -> str:
    """``HTTP 404 ErrorItemNotFound: The specified object was not found`` for messages.
    The response body must have been read."""
    code, message = graph_error_of(resp.content)
    text = f"HTTP {resp.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    return text


def mailbox_path(mailbox: str | None) -> str:
    """``/users/{mailbox}`` (URL-quoted) for a named mailbox, ``/me`` without one."""
    return f"/users/{quote(mailbox, safe='@')}" if mailbox else "/me"


class GraphThrottled(ConnectError):
    """Graph kept answering 429/503 (or 504 to an idempotent request) beyond the retry
    policy (retriable)."""


def _slots_for(host: str, app: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide limiter of one app on one Graph host (the first limit set wins)."""
    with _SLOTS_LOCK:
        key = (host.lower(), app.lower())
        if key not in _SLOTS:
            _SLOTS[key] = threading.BoundedSemaphore(limit)
        return _SLOTS[key]


class GraphSession:
    """Authenticated, throttling-aware requests to one mailbox's Graph endpoints.

    Thread-safe (httpx.Client is); methods raise postline errors: ConnectError (network,
    throttled too long, 5xx), TLSError, TokenError/AuthError (401 after a refresh).
    Other HTTP statuses are returned to the caller, which knows what they mean there.
    """

    def __init__(self, *, graph_url: str, mailbox: str | None, provider: Any,
                 ca_file: str | None = None, verify: bool = True,
                 connect_timeout: float = 15.0, read_timeout: float = 60.0,
                 policy: RetryPolicy = RetryPolicy(), trace: Trace = NULL_TRACE,
                 sleep: Callable[[float], None] = time.sleep, app: str | None = None,
                 max_concurrent: int = MAX_CONCURRENT_PER_APP) -> None:
        """``app`` is the client id whose requests share one limiter of ``max_concurrent``
        (without one, the mailbox stands in for it)."""
        parts = urlsplit(graph_url)
        if parts.scheme != "https" or not parts.hostname:
            from postline.errors import ConfigError

            raise ConfigError(f"graph_url {graph_url!r} must be an https:// URL",
                              hint="omit graph_url to use https://graph.microsoft.com/v1.0")
        self.base_url = graph_url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 443
        self.mailbox = mailbox
        self.user_url = self.base_url + mailbox_path(mailbox)
        self.verify = verify
        self._provider = provider
        self._policy = policy
        self._trace = trace
        self._sleep = sleep
        self.app = app or f"mailbox:{mailbox or '/me'}"
        self.max_concurrent = max_concurrent
        self._slots = _slots_for(f"{self.host}:{self.port}", self.app, max_concurrent)
        self._refresh_lock = threading.Lock()
        ctx: ssl.SSLContext = tls.client_context(verify=verify, ca_file=ca_file)
        self._client = httpx.Client(
            verify=ctx, trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout))

    def close(self) -> None:
        """Close the connection pool; never raises."""
        try:
            self._client.close()
        except Exception as exc:  # noqa: BLE001 - closing must not fail
            log.debug("closing the Graph client failed: %s", exc)

    # -- URLs ----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL: ``path`` under the mailbox (``/mailFolders``) or a link Graph gave.

        Raises ProtocolError for a link that leaves ``graph_url`` (the token must not go
        anywhere else)."""
        if path.startswith(("https://", "http://")):
            if not path.startswith(self.base_url + "/"):
                raise ProtocolError(f"Graph returned a link outside {self.base_url}: "
                                    f"{path.split('?')[0]}", hint="check graph_url")
            return path
        return self.user_url + path

    # -- requests ------------------------------------------------------------------------

    @property
    def token_source(self) -> str:
        """Where tokens come from (never a secret)."""
        return str(getattr(self._provider, "description", "a token provider"))

    def token(self, *, force_refresh: bool = False) -> str:
        """An access token (TokenError / LoginRequired when none can be had)."""
        return self._provider.token(force_refresh=force_refresh)

    def request(self, method: str, path: str, *, json_body: Any = None,
                content: bytes | None = None, headers: dict[str, str] | None = None,
                what: str = "") -> httpx.Response:
        """Send one request (retrying throttling) and return the read response."""
        resp, release = self._exchange(method, path, json_body=json_body, content=content,
                                       headers=headers, stream=False, what=what)
        release()
        return resp

    @contextmanager
    def stream(self, method: str, path: str, *, what: str = "",
               headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """Like :meth:`request`, but the body is streamed (``resp.iter_bytes()``); the
        app's slot is held until the block ends."""
        resp, release = self._exchange(method, path, stream=True, what=what, headers=headers)
        try:
            yield resp
        except httpx.TransportError as exc:
            raise self._transport_error(exc, what or path) from exc
        finally:
            resp.close()
            release()

    def upload(self, upload_url: str, chunk: bytes, *, start: int, total: int,
               what: str) -> httpx.Response:
        """PUT one byte range of an upload session to its ``uploadUrl`` and return the read
        response. The URL is on another host and carries its own authorization: Microsoft
        says not to send the ``Authorization`` header there
        (https://learn.microsoft.com/en-us/graph/outlook-large-attachments). 429/503/504 are
        retried like any idempotent request. Raises ProtocolError for a non-https URL."""
        if not upload_url.startswith("https://"):
            raise ProtocolError(f"Graph returned an upload URL that is not https: "
                                f"{upload_url.split('?')[0]}")
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}"}
        attempt = 0
        while True:
            self._slots.acquire()
            try:
                resp = self._client.put(upload_url, content=chunk, headers=headers)
            except httpx.TransportError as exc:
                raise self._transport_error(exc, what) from exc
            finally:
                self._slots.release()
            if resp.status_code not in RETRY_STATUSES | IDEMPOTENT_RETRY_STATUSES:
                return resp
            wait = self._retry_wait(resp, attempt, what)
            self._sleep(wait)
            attempt += 1

    def _headers(self, extra: dict[str, str] | None, refresh: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(force_refresh=refresh)}",
                   "Prefer": 'IdType="ImmutableId"', "Accept": "application/json"}
        extra = dict(extra or {})
        if "Prefer" in extra:  # preferences add up (RFC 7240), they do not replace
            headers["Prefer"] += ", " + extra.pop("Prefer")
        headers.update(extra)
        return headers

    def _exchange(self, method: str, path: str, *, stream: bool, what: str,
                  json_body: Any = None, content: bytes | None = None,
                  headers: dict[str, str] | None = None
                  ) -> tuple[httpx.Response, Callable[[], None]]:
        url = self.url(path)
        what = what or f"{method} {path.split('?')[0]}"
        refreshed = force = False
        attempt = 0
        while True:
            req = self._client.build_request(method, url, headers=self._headers(headers, force),
                                             json=json_body, content=content)
            force = False
            self._slots.acquire()
            try:
                resp = self._client.send(req, stream=stream)
            except httpx.TransportError as exc:
                self._slots.release()
                raise self._transport_error(exc, what) from exc
            except BaseException:
                self._slots.release()
                raise
            if resp.status_code == 401 and not refreshed:
                resp.close()
                self._slots.release()
                log.info("Graph answered 401 to %s; refreshing the token once", what)
                refreshed = force = True
                continue
            if resp.status_code in RETRY_STATUSES or (
                    resp.status_code in IDEMPOTENT_RETRY_STATUSES
                    and method.upper() in IDEMPOTENT_METHODS):
                resp.read()
                resp.close()
                self._slots.release()
                wait = self._retry_wait(resp, attempt, what)
                log.warning("Graph throttled %s (HTTP %s); retrying in %.1f s", what,
                            resp.status_code, wait)
                self._sleep(wait)
                attempt += 1
                continue
            if not stream or resp.status_code >= 300:
                try:
                    resp.read()
                except httpx.TransportError as exc:
                    raise self._transport_error(exc, what) from exc
                finally:
                    resp.close()
                    self._slots.release()
                if resp.status_code == 401:
                    raise _token_rejected(resp, what)
                return resp, _noop
            return resp, self._slots.release

    def _retry_wait(self, resp: httpx.Response, attempt: int, what: str) -> float:
        p = self._policy
        wait = retry_after(resp.headers.get("Retry-After"), now=time.time())
        if wait is None:
            wait = backoff(attempt + 1, first=p.default_wait)
        if attempt >= p.max_retries or wait > p.max_wait:
            raise GraphThrottled(f"Microsoft Graph kept throttling {what} ({describe(resp)}, "
                               f"Retry-After {resp.headers.get('Retry-After', '-')}) after "
                               f"{attempt + 1} attempt(s)",
                               hint="the mailbox is busy; postline tries again later")
        return wait

    def _transport_error(self, exc: httpx.TransportError, what: str) -> PostlineError:
        where = f"{self.host}:{self.port}"
        cause = _ssl_cause(exc)
        if cause is not None:
            return tls.translate_ssl_error(cause, host=self.host, port=self.port)
        if isinstance(exc, httpx.ConnectTimeout):
            return ConnectTimeout(f"connecting to Microsoft Graph at {where} timed out",
                                  hint="check graph_url and the network; raise connect_timeout")
        if isinstance(exc, httpx.TimeoutException):
            return ConnectTimeout(f"Microsoft Graph at {where} did not answer {what} in time",
                                  hint="raise read_timeout if the mailbox is just slow")
        if isinstance(exc, httpx.ConnectError):
            return ConnectError(f"cannot connect to Microsoft Graph at {where}: {exc}",
                                hint="check graph_url and the network")
        return ConnectError(f"connection to Microsoft Graph at {where} failed during {what}: "
                            f"{type(exc).__name__}", hint="it will be retried")


def _noop() -> None:
    return None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind an httpx error, or None: httpx wraps httpcore's error, which
    wraps the ssl module's, so it is a few links down the cause chain."""
    seen = exc.__cause__ or exc.__context__
    for _ in range(8):      # a bound against a cyclic chain
        if seen is None or isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _token_rejected(resp: httpx.Response, what: str) -> TokenError:
    return TokenError(f"Microsoft Graph rejected the access token for {what} even after a "
                      f"refresh ({describe(resp)})",
                      hint="the token must be for Microsoft Graph: check the credential's "
                           "authority and scopes (e.g. https://graph.microsoft.com/.default)")


def access_error(resp: httpx.Response, what: str, mailbox: str | None) -> AuthError:
    """The AuthError for a 403: the app lacks a permission or may not use this mailbox."""
    return AuthError(f"Microsoft Graph denied {what} on mailbox {mailbox or '/me'} "
                     f"({describe(resp)})",
                     hint="grant the app Mail.ReadWrite and Mail.Send (admin consent for "
                          "application permissions) and check any application access policy")


def unexpected(resp: httpx.Response, what: str) -> PostlineError:
    """The error for any other status the caller did not expect (5xx retriable)."""
    text = f"Microsoft Graph answered {what} with {describe(resp)}"
    if resp.status_code >= 500:
        return ConnectError(text, hint="a server-side problem; it will be retried")
    return ProtocolError(text, hint="check the folder names and the mailbox",
                         disposition="fatal")
