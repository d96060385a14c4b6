"""Time-based decisions, all against an injectable :class:`Clock` (tests use a fake one).

* :class:`PollSchedule` - when the next polling round is due (interval or cron);
* :class:`FailureBackoff` - pause after failures, doubling from min to max, reset after N
  successful streams or T seconds without a failure.

The limit on new streams is :class:`postline.limiter.SlidingWindow`, the delays
:func:`postline.retry.backoff`.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from postline.retry import backoff


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

            base = datetime.fromtimestamp(t, tz=UTC)
            return float(croniter(self.cron, base).get_next(float))
        return t + self.interval

    def seconds_until_next(self, last_start: float) -> float:
        """How long to wait from now until the round after one that started ``last_start``."""
        return max(0.0, self.next_after(last_start) - self.clock.now())


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
        return backoff(self.failures, first=self.min, cap=self.max)

    def reset(self) -> None:
        self.failures = 0
        self._ok_since_failure = 0

    def _maybe_reset_by_time(self) -> None:
        if (self.failures and self.reset_seconds and self._last_failure is not None
                and self.clock.monotonic() - self._last_failure >= self.reset_seconds):
            self.reset()
