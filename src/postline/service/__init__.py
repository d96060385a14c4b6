"""Email Service: send mail through an EmailConnection.

>>> import postline
>>> from postline.service import open_service
>>> svc = open_service(postline.open_project("examples/local"), "Notify")   # doctest: +SKIP
>>> svc.Send({"From": "me@example.test", "To": [{"Address": "you@example.test"}],
...           "Subject": "Hi", "Body": "<p>Hello</p>"})                      # doctest: +SKIP

Modules: ``message`` (normalise the EmailMessage shapes), ``addresses``, ``html_text``,
``mime`` (build the wire form), ``outbox`` (durable queue), ``engine``
(delivery loop), ``email_service`` (the user-facing object), ``results``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from postline.errors import ConfigError
from postline.protocols.base import MailSender
from postline.service.email_service import EmailService
from postline.service.results import QueuedMail, error_to_json, result_to_json

__all__ = [
    "EmailService",
    "QueuedMail",
    "close_all",
    "error_to_json",
    "open_service",
    "open_services",
    "result_to_json",
]

_OPEN: dict[tuple[str, str], EmailService] = {}
_OPEN_LOCK = threading.Lock()


def open_service(project: Any, name: str, *,
                 sender_factory: Callable[[], MailSender] | None = None,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None,
                 poll_interval: float = 1.0) -> EmailService:
    """The running EmailService ``name`` of ``project`` (one per project and name in a process).

    ``sender_factory`` (tests) replaces ``postline.protocols.open_sender``. Raises
    ConfigError when the asset is missing, or its connection cannot send.
    """
    key = (str(project.state_dir), name)
    with _OPEN_LOCK:
        svc = _OPEN.get(key)
        if svc is not None and not svc._closed:
            return svc
        svc = _OPEN[key] = _build(project, name, sender_factory=sender_factory, clock=clock,
                                  sleep=sleep, poll_interval=poll_interval)
        return svc


def open_services(project: Any, names: list[str] | None = None
                  ) -> tuple[dict[str, EmailService], dict[str, str]]:
    """Open the EmailServices ``names`` (default: every one of the project) now, as
    ``postline serve`` does at start: each one that gets its outbox's delivery lock sends
    the mails an earlier process left queued, without waiting for an API call.

    Returns (opened services by name, why the others could not be opened); never raises
    for one service's ConfigError, StorageError or the like.
    """
    from postline.errors import PostlineError

    if names is None:
        names = [a.name for a in project.assets("EmailService")]
    opened: dict[str, EmailService] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            opened[name] = open_service(project, name)
        except PostlineError as exc:
            failed[name] = str(exc)
    return opened, failed


def close_all() -> None:
    """Close every service opened by :func:`open_service` in this process."""
    with _OPEN_LOCK:
        services = list(_OPEN.values())
        _OPEN.clear()
    for svc in services:
        svc.close()


def _build(project: Any, name: str, *, sender_factory: Callable[[], MailSender] | None,
           clock: Callable[[], float] | None,
           sleep: Callable[[float], Awaitable[None]] | None, poll_interval: float
           ) -> EmailService:
    import asyncio
    import time

    from postline.limiter import SlidingWindow
    from postline.service.engine import EngineSettings
    from postline.state.locks import ProcessLock

    asset = project.get("EmailService", name)
    conn = project.get("EmailConnection", asset.connection)
    can_send = conn.type == "microsoft365" or conn.endpoint("outgoing") is not None
    if not can_send:
        raise ConfigError(f"EmailService {name}: connection {conn.name} has no outgoing smtp",
                          hint="add an outgoing block with protocol: smtp to the connection")
    if sender_factory is None:
        from postline.protocols import open_sender

        def sender_factory() -> MailSender:
            return open_sender(project, conn, max_connections=asset.max_connections)

    clock = clock or time.time
    throttle = SlidingWindow(
        limit=None if asset.throttle is None else asset.throttle.max_messages,
        window=1.0 if asset.throttle is None else asset.throttle.window,
        clock=time.monotonic if clock is time.time else clock)
    settings = EngineSettings(
        service=name, max_connections=asset.max_connections, idle_timeout=asset.idle_timeout,
        max_attempts=asset.retry.max_attempts, min_backoff=asset.retry.min_backoff,
        max_backoff=asset.retry.max_backoff, poll_interval=poll_interval)
    state_dir = project.state_dir
    from postline.state.stores import delivery_parts, open_outbox

    outbox = open_outbox(project, clock=clock)
    lock: Any = ProcessLock(state_dir / f"outbox-{name}.lock")
    fleet = delivery_parts(project, name, outbox=outbox, limit=throttle.limit,
                           window=throttle.window, clock=clock)
    if fleet is not None:   # a StateStore on PostgreSQL: the whole fleet delivers
        lock, throttle = fleet
    return EmailService(
        settings=settings, open_sender=sender_factory,
        outbox=outbox, lock=lock, throttle=throttle,
        send_queue_size=asset.send_queue_size, default_from=asset.default_from, clock=clock,
        sleep=sleep or asyncio.sleep)
