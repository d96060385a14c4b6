"""The one rate limiter: at most N starts in ANY window of ``window`` seconds.

Used for the source's new streams per second/minute/hour and the service's delivery
attempts per window. A sliding-window log rather than a token bucket: a bucket of N tokens
refilled at N per minute lets almost 2N through in some 60-second windows, which is exactly
what a provider's "12 per minute" limit forbids. The clock is injected so tests drive it.

Two ways to use it:

* check, then record: :meth:`SlidingWindow.delay` says how long until a start is allowed,
  :meth:`~SlidingWindow.record` books one now, :meth:`~SlidingWindow.give_back` takes back
  starts that made nothing after all (the source runner);
* book ahead: :meth:`~SlidingWindow.reserve` books the earliest free slot, possibly in the
  future, and returns its delay; :meth:`~SlidingWindow.acquire` also waits for it. Slots are
  handed out in call order, so waiting callers keep their turn (the service engine).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

# the source asset's ``throttle.per`` in seconds
WINDOWS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


class SlidingWindow:
    """At most ``limit`` starts in any ``window`` seconds (``limit`` None: no limit)."""

    def __init__(self, *, limit: int | None, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Raises ValueError when ``limit`` is below 1 or ``window`` is not positive."""
        if limit is not None and limit < 1:
            raise ValueError(f"a rate limit must allow at least 1 start (got {limit})")
        if window <= 0:
            raise ValueError(f"a rate limit's window must be positive (got {window})")
        self.limit = limit
        self.window = window
        self.limited = limit is not None     # the service engine skips acquire() when False
        self._clock = clock
        self._starts: deque[float] = deque()  # start times in order, the last ``limit``

    def _next_start(self, now: float, limit: int) -> float:
        """The earliest start time allowed from ``now`` on, with starts older than one
        window forgotten."""
        starts = self._starts
        while starts and starts[0] <= now - self.window:
            starts.popleft()
        if len(starts) < limit:
            return max(now, starts[-1]) if starts else now
        return starts[0] + self.window

    def delay(self) -> float:
        """Seconds to wait before the next start is allowed (0: now). Books nothing."""
        if self.limit is None:
            return 0.0
        now = self._clock()
        return self._next_start(now, self.limit) - now

    def record(self) -> None:
        """A start happened now."""
        if self.limit is not None:
            self._starts.append(self._clock())

    def give_back(self, n: int) -> None:
        """The last ``n`` recorded starts made nothing after all (a filter, a duplicate)."""
        for _ in range(min(n, len(self._starts))):
            self._starts.pop()

    def reserve(self) -> float:
        """Book the earliest slot that keeps every window within the limit; returns how many
        seconds from now it starts (0 when it is free now)."""
        if self.limit is None:
            return 0.0
        now = self._clock()
        start = self._next_start(now, self.limit)
        if len(self._starts) >= self.limit:
            self._starts.popleft()
        self._starts.append(start)
        return start - now

    async def acquire(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Wait for the next slot (``sleep`` is injectable for tests)."""
        delay = self.reserve()
        if delay > 0:
            await sleep(delay)
