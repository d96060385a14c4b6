"""The throttle is exact: never more than N starts in any window, and no slower than that."""

from __future__ import annotations

import asyncio
import bisect

import pytest

from postline.limiter import SlidingWindow


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


def test_12_per_minute_over_five_minutes_is_exact():
    clock = FakeClock()
    th = SlidingWindow(limit=12, window=60, clock=clock)
    starts = []
    # a producer that always has mail: 100 mails, each sent as soon as its slot comes
    for _ in range(100):
        clock.t += th.reserve()
        starts.append(clock.t - 1000.0)
    assert max_in_any_window(starts, 60) == 12
    # exactly 12 in each minute of five minutes, the first 12 at once
    per_minute = [sum(1 for s in starts if m * 60 <= s < (m + 1) * 60) for m in range(5)]
    assert per_minute == [12, 12, 12, 12, 12]
    assert starts[:12] == [0.0] * 12 and starts[12] == 60.0


def test_bursty_arrivals_keep_the_window():
    clock = FakeClock()
    th = SlidingWindow(limit=12, window=60, clock=clock)
    starts = []
    for i in range(60):
        clock.t = 1000.0 + i * 7.3            # mails arrive every 7.3 s, faster than 12/min at times
        start = clock.t + th.reserve()
        starts.append(start)
    assert max_in_any_window(starts, 60) <= 12
    assert starts == sorted(starts)


def test_slow_traffic_is_not_delayed():
    clock = FakeClock()
    th = SlidingWindow(limit=2, window=1, clock=clock)
    delays = []
    for _ in range(10):
        delays.append(th.reserve())
        clock.t += 0.6
    assert delays == [0.0] * 10


def test_acquire_waits_with_the_injected_sleep():
    clock = FakeClock()
    th = SlidingWindow(limit=1, window=10, clock=clock)
    slept = []

    async def sleep(d):
        slept.append(d)
        clock.t += d

    async def run():
        for _ in range(3):
            await th.acquire(sleep)

    asyncio.run(run())
    assert slept == [10.0, 10.0]


def test_invalid_settings_raise():
    with pytest.raises(ValueError):
        SlidingWindow(limit=0, window=1)
