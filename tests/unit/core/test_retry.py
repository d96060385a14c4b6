"""The retry module on its own: backoff, Retry-After (RFC 9110) and the retry loop."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime

import pytest

from postline.retry import Interrupted, attempts, backoff, retry_after

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_backoff_doubles_from_the_first_pause_up_to_the_cap():
    assert [backoff(n, first=1, cap=10) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert [backoff(n, first=2) for n in (0, 1, 2, 3)] == [2, 2, 4, 8]   # no cap
    assert backoff(40, first=0.5, cap=30) == 30


def test_backoff_with_jitter_stays_between_zero_and_the_pause():
    assert backoff(3, first=1, cap=10, jitter=True, rng=lambda: 0.5) == 2.0
    assert backoff(9, first=1, cap=10, jitter=True, rng=lambda: 0.0) == 0.0
    assert backoff(9, first=1, cap=10, jitter=True, rng=lambda: 0.999) < 10


def test_retry_after_forms():
    now = time.time()
    assert retry_after("7", now=now) == 7.0
    assert retry_after("2.128", now=now) == 2.128     # Microsoft's throttling sample
    assert retry_after("-1", now=now) == 0.0 and retry_after("nan", now=now) is None
    assert retry_after("inf", now=now) is None
    assert retry_after(None, now=now) is None and retry_after("soon", now=now) is None
    assert retry_after("", now=now) is None and retry_after(" 3 ", now=now) == 3.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert 29 < retry_after(later, now=now) <= 30
    assert retry_after(email.utils.formatdate(0, usegmt=True), now=now) == 0.0


def test_an_http_date_is_read_against_the_given_now():
    assert retry_after("Fri, 02 Jan 2026 03:04:17 GMT", now=NOW) == 12.0
    assert retry_after("Fri, 02 Jan 2026 03:04:17 +0100", now=NOW) == 0.0   # in the past


@pytest.mark.parametrize("naive", [
    "Fri, 02 Jan 2026 03:04:17 -0000",      # RFC 2822's "zone unknown"
    "Fri Jan  2 03:04:17 2026",             # asctime, an obsolete HTTP-date form
])
def test_a_date_without_a_zone_is_gmt_as_rfc_9110_says(naive):
    # the Graph client used to read these as local time, the HTTP sink ignored them
    assert retry_after(naive, now=NOW) == 12.0


def test_attempts_pause_between_tries_and_ask_for_the_delay_late():
    paused: list[float] = []
    seen: list[int] = []
    answers = iter([5.0, 1.0])
    last = {"asked": 0.0}

    def delay(n: int) -> float:
        return last["asked"] + n

    for n in attempts(3, delay=delay, pause=paused.append):
        seen.append(n)
        last["asked"] = next(answers, 0.0)
    assert seen == [0, 1, 2]
    assert paused == [6.0, 3.0]       # the answer of the try before counts


def test_attempts_end_after_the_last_try():
    assert list(attempts(1, delay=lambda n: 99, pause=lambda s: None)) == [0]
    assert list(attempts(0, delay=lambda n: 99, pause=lambda s: None)) == []


def test_a_stop_during_the_pause_interrupts_the_loop():
    tries = []
    with pytest.raises(Interrupted) as err:
        for n in attempts(5, delay=lambda n: 1.0, pause=lambda s: len(tries) >= 2):
            tries.append(n)
    assert tries == [0, 1] and err.value.attempt == 2
    assert str(err.value) == "stopped before attempt 3"
