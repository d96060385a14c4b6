"""The HTTP API: thin. Parse, call the Email Service's async API, map errors to statuses.

=====================================  ======================================================
``GET  /api/health``                   200 ``{status, version}`` (no token needed)
``POST /api/services/{name}/send``     200 result; 422 invalid message (``field`` named);
                                       404 unknown service; 502 the server refused it (or the
                                       outcome is unknown); 503 retriable (try again later)
``POST /api/services/{name}/send-and-forget``  202 ``{id, message_id, state}``; 503 queue full
=====================================  ======================================================

The web console (assets, asset usage, forms, ledgers, outboxes, the runtime view) is in
:mod:`postline.web.routes`, mounted on the same app.

Errors are JSON ``{error, field, retriable, outcome, code, type}``. Every ``/api/services``
route needs ``Authorization: Bearer <token>`` (compared in constant time), checked before the
body is read; bodies are capped (413), repeated failures get 429 (:mod:`postline.web.guard`).
OpenAPI is served at ``/openapi.json``, interactive docs at ``/docs`` and ``/redoc`` with
their scripts from the installed ``fastapi-offline`` package (no CDN: closed networks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline

from postline.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    DeliveryError,
    MessageError,
    PostlineError,
    QueueFull,
)
from postline.version import __version__
from postline.web.guard import BodyTooLarge, Guard, GuardMiddleware, ServeLimits, too_large_response

EXAMPLE = {"From": {"Address": "reports@example.test", "PersonalName": "Reports"},
           "To": [{"Address": "ann@example.test", "PersonalName": "Ann"}],
           "Subject": "Daily report", "Body": "<p>All <b>green</b>.</p>"}
_ERROR_SCHEMA = {"content": {"application/json": {"example": {
    "error": "both To and ToList are given; use one of them", "field": "To,ToList",
    "retriable": False, "outcome": None, "code": None, "type": "MessageError"}}}}


class _ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers


def status_for(exc: PostlineError) -> int:
    """The HTTP status of a postline error raised by Send / SendAndForget."""
    if isinstance(exc, MessageError):
        return 422
    if isinstance(exc, QueueFull):
        return 503
    if isinstance(exc, DeliveryError):
        return 503 if exc.retriable else 502
    if isinstance(exc, ConnectError):
        return 503 if exc.retriable else 502
    if isinstance(exc, AuthError):
        return 502
    return 500


def create_app(project: Any, *, token: str, open_service=None, limits: ServeLimits | None = None,
               clock: Callable[[], float] = time.monotonic, read_only: bool = False,
               status_url: str | None = None) -> FastAPI:
    """The FastAPI app serving ``project``'s Email Services, guarded by bearer ``token``.

    ``open_service(project, name)`` defaults to :func:`postline.service.open_service`;
    ``limits`` (body sizes, sessions, failed-login back-off) default to :class:`ServeLimits`,
    timed by ``clock``. ``read_only``: the console changes nothing; ``status_url``: the
    ``/status`` of a ``postline run --status`` the console's runtime view shows. Services
    opened here are closed when the app shuts down. Raises
    ConfigError when ``token`` is empty.
    """
    from postline.service import error_to_json, result_to_json
    from postline.service.message import refuse_file_paths

    if open_service is None:
        from postline.service import open_service
    if not token:
        raise ConfigError("the HTTP API needs a bearer token")
    opened: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for svc in opened.values():
            svc.close()

    # validatorUrl None: Swagger UI would otherwise send the schema's URL to a public validator
    app = FastAPIOffline(title="postline", version=__version__, lifespan=lifespan,
                         description="Send mail through the Email Services of a postline "
                         "project.", static_url="/docs-assets",
                         swagger_ui_parameters={"validatorUrl": None})
    guard = Guard(token=token, limits=limits, clock=clock)
    app.add_middleware(GuardMiddleware, guard=guard)
    bearer = HTTPBearer(auto_error=False, description="POSTLINE_API_TOKEN or --token-secret")

    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # GuardMiddleware already refused a wrong token before the body was read; this
        # dependency puts the scheme in the OpenAPI document and checks once more
        if not guard.token_ok(creds.credentials if creds else ""):
            raise _ApiError(401, {"error": "missing or wrong bearer token" if creds else
                                  "this API needs 'Authorization: Bearer <token>'",
                                  "field": None, "retriable": False, "type": "Unauthorized"},
                            {"WWW-Authenticate": "Bearer"})

    def service(name: str):
        if name not in opened:
            try:
                project.entry("EmailService", name)
            except ConfigError as exc:
                raise _ApiError(404, {**error_to_json(exc), "field": "name"}) from None
            opened[name] = open_service(project, name)
        return opened[name]

    def fail(exc: PostlineError) -> _ApiError:
        headers = {"Retry-After": "30"} if status_for(exc) == 503 else None
        return _ApiError(status_for(exc), error_to_json(exc), headers)

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return too_large_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return JSONResponse({"error": f"the request body must be an EmailMessage JSON object: "
                             f"{first.get('msg', 'invalid')}", "field": "message",
                             "retriable": False, "type": "BadRequest"}, status_code=400)

    @app.get("/api/health", tags=["health"])
    async def health() -> dict:
        """Liveness: 200 while the server runs."""
        return {"status": "ok", "version": __version__}

    responses = {401: _ERROR_SCHEMA, 404: _ERROR_SCHEMA, 422: _ERROR_SCHEMA,
                 502: _ERROR_SCHEMA, 503: _ERROR_SCHEMA}

    @app.post("/api/services/{name}/send", tags=["services"], responses=responses,
              dependencies=[Depends(require_token)])
    async def send(name: str, message: dict[str, Any] = Body(..., examples=[EXAMPLE])) -> dict:
        """Send and wait until the server accepted the mail: Message-ID, the server's reply
        and the status of every recipient."""
        svc = service(name)
        try:
            refuse_file_paths(message)
            return result_to_json(await svc.asend(message))
        except PostlineError as exc:
            raise fail(exc) from None

    @app.post("/api/services/{name}/send-and-forget", tags=["services"], status_code=202,
              responses=responses, dependencies=[Depends(require_token)])
    async def send_and_forget(name: str,
                              message: dict[str, Any] = Body(..., examples=[EXAMPLE])) -> dict:
        """Validate, queue durably and return at once (202) with the outbox id."""
        svc = service(name)
        try:
            refuse_file_paths(message)
            return (await svc.asend_and_forget(message)).to_json()
        except PostlineError as exc:
            raise fail(exc) from None

    from postline.web.routes import add_console

    # the HTML console (GET /, /login, the forms, ...)
    add_console(app, project, guard=guard, read_only=read_only, status_url=status_url)
    return app
