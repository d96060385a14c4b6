"""The send throttle: at most N delivery attempts in ANY window of ``window`` seconds.

A sliding-window log rather than a token bucket: a bucket of N tokens refilled at N per
minute lets almost 2N through in some 60-second windows, which is exactly what a provider's
"12 per minute" limit forbids. The clock is injected so tests can drive it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class Throttle:
    """Sliding-window limiter. ``reserve()`` books the next slot and returns its delay."""

    def __init__(self, *, max_messages: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_messages < 1 or window <= 0:
            raise ValueError("max_messages must be >= 1 and window > 0")
        self.limited = True
        self.max_messages = max_messages
        self.window = window
        self._clock = clock
        self._starts: deque[float] = deque()  # start times of the last max_messages slots

    def reserve(self) -> float:
        """Book the earliest slot that keeps every window within the limit.

        Returns how many seconds from now the slot starts (0 when it is free now). Slots are
        handed out in call order, so waiting callers keep their turn.
        """
        now = self._clock()
        if len(self._starts) < self.max_messages:
            start = max(now, self._starts[-1] if self._starts else now)
        else:
            start = max(now, self._starts[0] + self.window)
            self._starts.popleft()
        self._starts.append(start)
        return max(0.0, start - now)

    async def acquire(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Wait for the next slot (``sleep`` is injectable for tests)."""
        delay = self.reserve()
        if delay > 0:
            await sleep(delay)


class NoThrottle:
    """Stands in when the service has no throttle."""

    limited = False     # the engine skips acquire() altogether

    def reserve(self) -> float:
        return 0.0

    async def acquire(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        return None
