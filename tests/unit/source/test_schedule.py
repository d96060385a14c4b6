"""Polling schedule, throttle and failure backoff against a fake clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from postline.limiter import WINDOWS, SlidingWindow
from postline.retry import backoff
from postline.source.schedule import FailureBackoff, FakeClock, PollSchedule


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_interval_schedule():
    clock = FakeClock(start=1000.0)
    s = PollSchedule(interval=30, clock=clock)
    assert s.next_after(1000.0) == 1030.0
    clock.advance(10)
    assert s.seconds_until_next(1000.0) == 20.0
    clock.advance(100)
    assert s.seconds_until_next(1000.0) == 0.0


def test_cron_schedule_in_utc():
    clock = FakeClock(start=ts("2024-05-01T12:07:30"))
    s = PollSchedule(cron="*/15 * * * *", clock=clock)
    assert s.next_after(clock.now()) == ts("2024-05-01T12:15:00")
    assert s.next_after(ts("2024-05-01T12:15:00")) == ts("2024-05-01T12:30:00")
    assert s.seconds_until_next(clock.now()) == 450.0


def test_throttle_sliding_window():
    clock = FakeClock(start=0.0)
    t = SlidingWindow(limit=3, window=WINDOWS["minute"], clock=clock.monotonic)
    for _ in range(3):
        assert t.delay() == 0
        t.record()
    assert t.delay() == 60.0
    clock.advance(59)
    assert t.delay() == 1.0
    clock.advance(1)
    assert t.delay() == 0


def test_throttle_off():
    t = SlidingWindow(limit=None, window=60, clock=FakeClock().monotonic)
    for _ in range(1000):
        t.record()
    assert t.delay() == 0


def test_backoff_doubles_caps_and_resets_after_streams():
    clock = FakeClock(start=0.0)
    b = FailureBackoff(min=1, max=5, reset_after_streams=2, reset_after_seconds=None, clock=clock)
    assert b.current() == 0
    assert [b.failure() for _ in range(4)] == [1, 2, 4, 5]
    b.success()
    assert b.current() == 5
    b.success()
    assert b.current() == 0


def test_backoff_resets_after_quiet_time():
    clock = FakeClock(start=0.0)
    b = FailureBackoff(min=2, max=60, reset_after_streams=None, reset_after_seconds=300,
                       clock=clock)
    b.failure()
    b.failure()
    assert b.current() == 4
    clock.advance(299)
    assert b.current() == 4
    clock.advance(1)
    assert b.current() == 0


def test_retry_delay():
    assert [backoff(n, first=1, cap=10) for n in (1, 2, 3, 4, 5)] == \
        [1, 2, 4, 8, 10]


def test_fake_clock_wait_honours_stop():
    clock = FakeClock(start=0.0)
    stop = threading.Event()
    assert clock.wait(5, stop) is False and clock.now() == 5
    stop.set()
    assert clock.wait(5, stop) is True
