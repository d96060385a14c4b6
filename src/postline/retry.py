"""Retrying, written once: exponential backoff, ``Retry-After`` and the retry loop.

Every place that waits before trying again uses these: the Graph HTTP client (429/503),
the HTTP sink, the service engine's outbox requeue, the source's pause after failed mails
and a mail's own retries. Nothing here reads the time or sleeps on its own: the clock and
the pause are handed in, so tests drive them.

* :func:`backoff` - ``first * 2**(attempt-1)``, capped, optionally with full jitter;
* :func:`retry_after` - seconds a ``Retry-After`` header asks for (RFC 9110);
* :func:`attempts` - the attempt numbers of a retry loop, pausing between them;
* :class:`Interrupted` - raised by :func:`attempts` when the pause was cut by a stop request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC
from email.utils import parsedate_to_datetime


def backoff(attempt: int, *, first: float, cap: float | None = None, jitter: bool = False,
            rng: Callable[[], float] = random.random) -> float:
    """The pause before retry ``attempt`` (1-based): ``first``, 2*first, 4*first ... never
    more than ``cap`` (None: no cap). ``jitter`` spreads it uniformly over [0, pause] ("full
    jitter"), so many clients throttled at once do not come back at once; ``rng`` returns a
    number in [0, 1). Attempts below 1 count as 1. Never raises."""
    delay = first * 2.0 ** max(0, attempt - 1)
    if cap is not None:
        delay = min(cap, delay)
    return delay * rng() if jitter else delay


def retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds the ``Retry-After`` header ``value`` asks to wait from ``now`` (epoch seconds),
    or None when it is missing or unreadable. Never negative, never raises.

    RFC 9110 section 10.2.3: delay-seconds or an HTTP-date. Delay-seconds may be fractional
    (Microsoft Graph's throttling sample sends "2.128"); a negative one means now. An
    HTTP-date is always GMT (RFC 9110 section 5.6.7), so a date without a zone (asctime
    form, or ``-0000``) is read as UTC, not as the local time; a date in the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # Python < 3.10 returned None for unreadable dates
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class Interrupted(Exception):
    """The pause before attempt ``attempt`` (0-based) was ended by a stop request."""

    def __init__(self, attempt: int) -> None:
        super().__init__(f"stopped before attempt {attempt + 1}")
        self.attempt = attempt


def attempts(total: int, *, delay: Callable[[int], float],
             pause: Callable[[float], bool | None]) -> Iterator[int]:
    """The attempt numbers ``0 .. total-1`` of a retry loop; before each one after the first
    it calls ``pause(delay(n))`` (``delay`` is asked late, so it can look at what the last
    attempt answered). The caller returns or breaks on success and simply continues on a
    retriable failure; after the last attempt the loop ends and the caller raises.

    Raises :class:`Interrupted` when ``pause`` returns True (a stop request ended the wait).
    """
    for n in range(total):
        if n and pause(delay(n)):
            raise Interrupted(n)
        yield n
