"""A faithful local test double of Microsoft Graph's mail API, backed by the stack's Dovecot.

::

    with GraphDouble(stack=mail_stack) as graph:      # HTTPS on 127.0.0.1, random port
        graph.url                                       # -> graph_url of a connection
        graph.inject(429, retry_after=1)                # the next request is throttled
        graph.requests                                  # what was asked, for assertions

It serves ``/v1.0/users/{mailbox}/...`` and ``/v1.0/me/...``: mailFolders (list, get,
childFolders, create; hidden folders only with ``includeHiddenFolders``), ``messages/delta``
per folder (``graph_double_delta.py``: created, updated and ``@removed`` items, duplicates,
empty pages, lost sync states), messages (get, ``$value``, PATCH isRead/flag, DELETE = move
to Deleted Items, ``permanentDelete``, ``move``, ``copy``) and sending
(``graph_double_send.py``: MIME ``sendMail``, MIME drafts, attachments, upload sessions on
another host name, ``send``). Errors have Graph's shape
``{"error": {"code", "message", "innerError"}}``
(https://learn.microsoft.com/en-us/graph/errors).

Bearer tokens must be RS256 JWTs of the stack's oidc-provider (keys from its ``jwks_uri``),
for ``audience`` (the stack's resource), not expired (with ``accept_test_tokens`` also the
HS256 tokens of ``StackInfo.mint_token``, so fast tests can act as any user), with
``{audience}/.default`` or the Graph scope the call needs (Mail.Read / Mail.ReadWrite /
Mail.Send). The token's ``email`` claim is the caller: ``/me`` is that mailbox;
``/users/{m}`` must be that mailbox, or one whose owner granted the caller access
(:meth:`GraphDouble.grant`), and then the ``.Shared`` scopes are needed
(https://learn.microsoft.com/en-us/graph/outlook-share-messages-folders); otherwise
ErrorAccessDenied. :attr:`GraphDouble.unusable` makes a mailbox answer
``MailboxNotEnabledForRESTAPI``, ``ErrorInvalidUser`` or ``ResourceNotFound`` (404).

Throttling as Microsoft documents it for Outlook
(https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits): at most
``max_concurrent_per_app`` (4) requests of one app (the token's ``appid``/``azp``/
``client_id``, else its user) at once; more answer 429 ``ApplicationThrottled``
("Application is over its MailboxConcurrency limit.") with a ``Retry-After`` in seconds,
fractional as in https://learn.microsoft.com/en-us/graph/throttling ("2.128"). How folders,
ids and messages map onto IMAP is described in ``graph_double_store.py``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from postline.testing.graph_double_delta import DeltaEngine
from postline.testing.graph_double_routes import Call
from postline.testing.graph_double_send import Outbox, upload_chunk
from postline.testing.graph_double_store import GraphFault, MailboxStore, folder_id
from postline.testing.info import StackInfo

DEFAULT_AUDIENCE = "https://mail.example.test"   # the stack's resource (servers.RESOURCE)


@dataclass
class Fault:
    """An injected answer: ``status`` for ``times`` matching requests after ``after`` ones."""

    status: int
    times: int = 1
    after: int = 0
    retry_after: float | None = None
    match: str = ""
    method: str = ""
    code: str = ""


@dataclass(frozen=True)
class Seen:
    """One request the double answered (``path`` without the query; ``query`` apart)."""

    method: str
    path: str
    status: int
    query: str = ""
    accept: str = ""
    host: str = ""
    authorization: bool = True


_CODES = {429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
          503: ("ServiceUnavailable", "Service is temporarily unavailable."),
          401: ("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
          500: ("InternalServerError", "An internal server error occurred.")}


class GraphDouble:
    """The HTTPS server. Start with ``with`` or :meth:`start`; stop with :meth:`stop`."""

    def __init__(self, *, stack: StackInfo, audience: str = DEFAULT_AUDIENCE,
                 issuer: str | None = None, page_size: int = 10,
                 accept_test_tokens: bool = False, quirks: bool = True,
                 max_concurrent_per_app: int = 4, throttle_retry_after: float = 0.25,
                 folder_exists_status: int = 400) -> None:
        """``quirks``: delta pages as users meet them (see graph_double_delta.py);
        ``folder_exists_status``: 400 as users report ErrorFolderExists, or 409."""
        self.stack = stack
        self.max_concurrent_per_app = max_concurrent_per_app
        self.throttle_retry_after = throttle_retry_after
        self.unusable: dict[str, str] = {}       # mailbox -> error code it answers with
        self.delegates: dict[str, set[str]] = {}  # mailbox -> users granted access
        self._per_app: dict[str, int] = {}
        self.max_in_flight_per_app: dict[str, int] = {}   # for assertions
        self.outbox = Outbox()
        self._flowing = threading.Event()   # cleared by pause(): admitted requests wait
        self._flowing.set()
        self.accept_test_tokens = accept_test_tokens
        self.audience = audience
        self.issuer = issuer or stack.oidc_issuer
        self.page_size = page_size
        self.store = MailboxStore(stack)
        self.store.exists_status = folder_exists_status
        self.delta = DeltaEngine(self.store, quirks=quirks)
        self.requests: list[Seen] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._jwks: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ``graph_url`` to configure: ``https://127.0.0.1:PORT/v1.0``."""
        return f"https://127.0.0.1:{self.port}/v1.0"

    def start(self, timeout: float = 10.0) -> GraphDouble:
        """Serve on a random free port; returns when it accepts connections."""
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        app = Starlette(routes=[Route("/v1.0/{rest:path}", self._endpoint,
                                      methods=["GET", "POST", "PATCH", "DELETE"]),
                                Route("/upload/AttachmentSessions/{sid}", self._upload,
                                      methods=["PUT"])])
        tls = self.stack.dir / "tls"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, ssl_certfile=str(tls / "server.pem"),
                                ssl_keyfile=str(tls / "server.key"), log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="graph-double", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Graph test double did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> GraphDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------

    def inject(self, status: int, *, times: int = 1, after: int = 0,
               retry_after: float | None = None, match: str = "", method: str = "",
               code: str = "") -> None:
        """Answer ``status`` to the ``times`` matching requests that follow the next
        ``after`` matching ones. ``match`` is a substring of the path, ``method`` an HTTP
        method ('' = any). 401 uses InvalidAuthenticationToken (an expired token)."""
        with self._lock:
            self._faults.append(Fault(status=status, times=times, after=after,
                                      retry_after=retry_after, match=match,
                                      method=method.upper(), code=code))

    def clear(self) -> None:
        """Forget injected faults, the request log, hidden folders, unusable mailboxes,
        grants and the status of a lost sync state (sync states themselves stay)."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.max_in_flight = 0
            self.max_in_flight_per_app.clear()
            self.unusable.clear()
            self.delegates.clear()
            self.store.hidden.clear()
        self.delta.lost_status = 410
        self._flowing.set()

    def lose_sync_state(self, status: int = 410) -> None:
        """Forget every delta sync state: the next delta page or round of any client
        answers ``status`` (410, or 400 as for other resources) ``syncStateNotFound``."""
        self.delta.lose(status)

    def grant(self, mailbox: str, *, to: str) -> None:
        """Let user ``to`` act on ``mailbox`` (Exchange folder permissions / Send As),
        with the ``.Shared`` scopes."""
        with self._lock:
            self.delegates.setdefault(mailbox.lower(), set()).add(to.lower())

    def pause(self) -> None:
        """Hold every admitted request until :meth:`resume` (requests over the per-app
        limit are still answered 429 at once): makes concurrency testable without timing."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def in_flight(self, app: str) -> int:
        """Requests of ``app`` being answered now."""
        with self._lock:
            return self._per_app.get(app, 0)

    def hide(self, imap_folder: str) -> None:
        """Make a folder hidden (``isHidden``): listed only with includeHiddenFolders."""
        self.store.hidden.add(imap_folder)

    def _fault_for(self, method: str, path: str) -> Fault | None:
        """The injected fault for a request (``path`` includes ``?query``)."""
        with self._lock:
            for f in self._faults:
                if f.times <= 0 or f.match not in path or f.method not in ("", method):
                    continue
                if f.after > 0:
                    f.after -= 1
                    continue
                f.times -= 1
                return f
        return None

    # -- HTTP -------------------------------------------------------------------------------

    async def _endpoint(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        body = await request.body()
        path = "/" + request.path_params["rest"]
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            root = str(request.base_url).rstrip("/") + "/v1.0"
            status, headers, content = await run_in_threadpool(
                self._handle, request.method, path, root, request.url.query,
                dict(request.headers), body)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self.requests.append(Seen(request.method, path, status,
                                      query=unquote(request.url.query),
                                      accept=request.headers.get("accept", ""),
                                      host=request.headers.get("host", ""),
                                      authorization="authorization" in request.headers))
        return Response(content=content, status_code=status, headers=headers)

    def _handle(self, method: str, path: str, root: str, query: str,
                headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            fault = self._fault_for(method, f"{path}?{unquote(query)}" if query else path)
            if fault is not None:
                code, message = _CODES.get(fault.status, ("ErrorInjected", "Injected fault."))
                extra = {}
                # seconds, fractional in https://learn.microsoft.com/en-us/graph/throttling
                if fault.retry_after is not None:
                    extra["Retry-After"] = f"{fault.retry_after:g}"
                raise GraphFault(fault.status, fault.code or code, message, extra)
            claims = self._authenticate(headers)
            m = re.fullmatch(r"/(?:users/([^/]+)|me)(/.*)?", path)
            if not m:
                raise GraphFault(400, "BadRequest", f"Resource not found for the segment "
                                 f"'{path.strip('/').split('/')[0]}'.")
            caller = str(claims.get("email", "")).lower()
            user = unquote(m.group(1)) if m.group(1) else caller
            if user.lower() in self.unusable:
                code = self.unusable[user.lower()]
                raise GraphFault(404, code, {
                    "MailboxNotEnabledForRESTAPI": "The mailbox is either inactive, "
                    "soft-deleted, or is hosted on-premise.",
                    "ErrorInvalidUser": f"The requested user '{user}' is invalid."}.get(
                        code, "Resource could not be discovered."))
            shared = user.lower() != caller
            if shared and caller not in self.delegates.get(user.lower(), set()):
                raise GraphFault(403, "ErrorAccessDenied",
                                 "Access is denied. Check credentials and try again.")
            base = root + (f"/users/{quote(user, safe='@')}" if m.group(1) else "/me")
            ctx = Call(self, method, m.group(2) or "/", parse_qs(query), headers, body,
                        user, claims, base, shared=shared)
            with self._app_slot(claims):
                return ctx.run()
        except GraphFault as f:
            err = {"error": {"code": f.code, "message": f.message, "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4())}}}
            hdrs = {"Content-Type": "application/json", **f.headers}
            if f.status == 401:
                hdrs["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
            return f.status, hdrs, json.dumps(err).encode()

    @contextmanager
    def _app_slot(self, claims: dict[str, Any]) -> Iterator[None]:
        """Count a request of the token's app; over the limit it is answered 429, as Outlook
        does: "4 concurrent requests" per app
        (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits),
        "Application is over its MailboxConcurrency limit." (users' reports)."""
        app = str(claims.get("appid") or claims.get("azp") or claims.get("client_id")
                  or claims.get("email") or "")
        with self._lock:
            if self._per_app.get(app, 0) >= self.max_concurrent_per_app:
                raise GraphFault(429, "ApplicationThrottled",
                                 "Application is over its MailboxConcurrency limit.",
                                 {"Retry-After": f"{self.throttle_retry_after:g}"})
            self._per_app[app] = self._per_app.get(app, 0) + 1
            self.max_in_flight_per_app[app] = max(self.max_in_flight_per_app.get(app, 0),
                                                  self._per_app[app])
        try:
            self._flowing.wait(30)
            yield
        finally:
            with self._lock:
                self._per_app[app] -= 1

    async def _upload(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        body = await request.body()
        status, headers, content = await run_in_threadpool(
            upload_chunk, self, request.path_params["sid"], parse_qs(request.url.query),
            dict(request.headers), body)
        with self._lock:
            self.requests.append(Seen("PUT", request.url.path, status,
                                      host=request.headers.get("host", ""),
                                      authorization="authorization" in request.headers))
        return Response(content=content, status_code=status, headers=headers)

    def _keys(self) -> Any:
        import httpx
        import jwt

        if self._jwks is None:
            with httpx.Client(verify=self.stack.ssl_context(), trust_env=False,
                              timeout=10) as client:
                conf = client.get(self.issuer + "/.well-known/openid-configuration").json()
                self._jwks = jwt.PyJWKSet.from_dict(client.get(conf["jwks_uri"]).json())
        return self._jwks

    def _authenticate(self, headers: dict[str, str]) -> dict[str, Any]:
        import jwt

        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise GraphFault(401, "InvalidAuthenticationToken", "Access token is empty.")
        token = auth[7:].strip()
        try:
            if self.accept_test_tokens and jwt.get_unverified_header(token).get("alg") == "HS256":
                # StackInfo.mint_token(): lets fast tests act as any stack user
                return jwt.decode(token, self.stack.hs256_key_file.read_bytes(),
                                  algorithms=["HS256"], audience=self.audience,
                                  issuer=self.stack.test_issuer)
            kid = jwt.get_unverified_header(token).get("kid")
            key = next((k for k in self._keys().keys if k.key_id == kid), None)
            if key is None:
                raise GraphFault(401, "InvalidAuthenticationToken",
                                 "Access token validation failure. Invalid signing key.")
            return jwt.decode(token, key.key, algorithms=["RS256"], audience=self.audience,
                              issuer=self.issuer)
        except jwt.ExpiredSignatureError:
            raise GraphFault(401, "InvalidAuthenticationToken",
                             "Access token has expired or is not yet valid.") from None
        except jwt.InvalidAudienceError:
            raise GraphFault(401, "InvalidAuthenticationToken",
                             "Access token validation failure. Invalid audience.") from None
        except jwt.PyJWTError as exc:
            raise GraphFault(401, "InvalidAuthenticationToken",
                             f"Access token validation failure. {exc}") from None


__all__ = ["Fault", "GraphDouble", "GraphFault", "Seen", "folder_id"]
