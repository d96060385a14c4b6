"""postline.testing.waits: the one polling loop of the tests."""

from __future__ import annotations

import pytest

from postline.testing.waits import eventually, poll


def test_eventually_returns_what_the_condition_returned_once_truthy():
    calls = iter([0, None, "", "here"])
    assert eventually(lambda: next(calls), 5, "the value", interval=0) == "here"


def test_eventually_names_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for the flag"):
        eventually(lambda: False, 0.05, "the flag", interval=0.01)


def test_poll_asks_once_more_at_the_deadline_and_returns_the_last_answer():
    answers = iter([False, "late"])
    assert poll(lambda: next(answers), timeout=0) == "late"
    assert poll(lambda: 0, timeout=0) == 0
