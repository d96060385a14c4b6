"""The sliding-window limiter on its own (its callers' tests are test_schedule.py and
test_service_throttle.py)."""

from __future__ import annotations

import pytest

from postline.limiter import WINDOWS, SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_check_then_record_and_give_back():
    clock = Clock()
    w = SlidingWindow(limit=2, window=WINDOWS["second"], clock=clock)
    w.record()
    w.record()
    assert w.delay() == 1.0
    w.give_back(1)              # the second start made no stream after all
    assert w.delay() == 0.0
    w.give_back(5)              # more than were recorded: no harm
    clock.t = 0.5
    w.record()
    w.record()
    assert w.delay() == 1.0     # the window slides from the oldest start


def test_booking_ahead_hands_out_slots_in_call_order():
    clock = Clock()
    w = SlidingWindow(limit=2, window=10, clock=clock)
    assert [w.reserve() for _ in range(5)] == [0.0, 0.0, 10.0, 10.0, 20.0]
    assert w.delay() == 20.0    # a checker waits behind the booked slots


def test_no_limit():
    w = SlidingWindow(limit=None, window=60, clock=Clock())
    for _ in range(100):
        w.record()
        assert w.reserve() == 0.0
    assert w.delay() == 0.0 and not w.limited


@pytest.mark.parametrize("limit, window", [(0, 1), (-1, 1), (1, 0)])
def test_bad_settings_say_what_is_wrong(limit, window):
    with pytest.raises(ValueError, match="rate limit"):
        SlidingWindow(limit=limit, window=window)
