"""Time-based decisions, all against an injectable :class:`Clock` (tests use a fake one).

* :class:`PollSchedule` - when the next polling round is due (interval or cron);
* :class:`Throttle` - at most N new streams per second / minute / hour (sliding window);
* :class:`FailureBackoff` - pause after failures, doubling from min to max, reset after N
  successful streams or T seconds without a failure;
* :func:`retry_delay` - the delay before retry number n of one mail.
"""

from __future__ import annotations

import collections
import threading
import time
from datetime import datetime, timezone

_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


class Clock:
    """Wall time and an interruptible wait. ``wait`` returns True when ``stop`` was set."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if seconds <= 0:
            return stop.is_set()
        return stop.wait(seconds)


class FakeClock(Clock):
    """A clock for tests: ``wait`` advances time instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if seconds > 0:
            self.waits.append(seconds)
            self.t += seconds
        return stop.is_set()


class PollSchedule:
    """Next due time of a polling round: every ``interval`` seconds, or by ``cron`` (UTC)."""

    def __init__(self, *, interval: float | None = None, cron: str | None = None,
                 clock: Clock) -> None:
        self.interval = interval if interval is not None else 60.0
        self.cron = cron
        self.clock = clock

    def next_after(self, t: float) -> float:
        """The first due time strictly after ``t`` (epoch seconds)."""
        if self.cron:
            from croniter import croniter

            base = datetime.fromtimestamp(t, tz=timezone.utc)
            return float(croniter(self.cron, base).get_next(float))
        return t + self.interval

    def seconds_until_next(self, last_start: float) -> float:
        """How long to wait from now until the round after one that started ``last_start``."""
        return max(0.0, self.next_after(last_start) - self.clock.now())


class Throttle:
    """At most ``max_streams`` new streams in any window of one ``per``."""

    def __init__(self, *, max_streams: int | None, per: str = "minute", clock: Clock) -> None:
        self.max = max_streams
        self.window = _PER[per]
        self.clock = clock
        self._starts: collections.deque[float] = collections.deque()

    def delay(self) -> float:
        """Seconds to wait before the next stream may start (0 = now)."""
        if not self.max:
            return 0.0
        now = self.clock.monotonic()
        while self._starts and self._starts[0] <= now - self.window:
            self._starts.popleft()
        if len(self._starts) < self.max:
            return 0.0
        return self._starts[0] + self.window - now

    def record(self) -> None:
        """A stream started now."""
        if self.max:
            self._starts.append(self.clock.monotonic())

    def give_back(self, n: int) -> None:
        """The last ``n`` recorded starts made no stream after all (a filter, a duplicate)."""
        for _ in range(min(n, len(self._starts))):
            self._starts.pop()


class FailureBackoff:
    """Pause after failures; the pause doubles from ``min`` to ``max`` per failure in a row."""

    def __init__(self, *, min: float, max: float, reset_after_streams: int | None,
                 reset_after_seconds: float | None, clock: Clock) -> None:
        self.min, self.max = min, max
        self.reset_streams = reset_after_streams
        self.reset_seconds = reset_after_seconds
        self.clock = clock
        self.failures = 0
        self._ok_since_failure = 0
        self._last_failure: float | None = None

    def failure(self) -> float:
        """Record a failure; returns the pause to take now."""
        self._maybe_reset_by_time()
        self.failures += 1
        self._ok_since_failure = 0
        self._last_failure = self.clock.monotonic()
        return self.current()

    def success(self) -> None:
        """Record a successful stream."""
        self._maybe_reset_by_time()
        if self.failures:
            self._ok_since_failure += 1
            if self.reset_streams and self._ok_since_failure >= self.reset_streams:
                self.reset()

    def current(self) -> float:
        """The pause the failures so far call for (0 when none)."""
        self._maybe_reset_by_time()
        if not self.failures:
            return 0.0
        return min(self.max, self.min * (2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0
        self._ok_since_failure = 0

    def _maybe_reset_by_time(self) -> None:
        if (self.failures and self.reset_seconds and self._last_failure is not None
                and self.clock.monotonic() - self._last_failure >= self.reset_seconds):
            self.reset()


def retry_delay(attempt: int, *, min_backoff: float, max_backoff: float) -> float:
    """Delay before retry ``attempt`` (1-based): min, 2*min, 4*min ... capped at max."""
    return min(max_backoff, min_backoff * (2 ** max(0, attempt - 1)))
