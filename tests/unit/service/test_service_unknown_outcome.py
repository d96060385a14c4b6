"""An unknown outcome is said once: the service adds "not retried" only when the sender's
error does not say it already (a fact on the exception, not words searched in its text)."""

from __future__ import annotations

import pytest
from service_fakes import MSG, FakeSender

from postline.errors import DeliveryError, DeliveryOutcome


def test_the_service_says_not_retried_when_the_sender_did_not(service_factory):
    svc, _ = service_factory(FakeSender(script=["drop-after"]))
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert err.value.outcome is DeliveryOutcome.UNKNOWN and err.value.outcome == "unknown"
    assert str(err.value).startswith(
        "connection lost after the final dot: outcome unknown, not retried (the server may "
        "have the mail)")


def test_a_sender_that_said_it_is_not_repeated(service_factory):
    svc, sender = service_factory(FakeSender(script=["drop-after-said"]))
    with pytest.raises(DeliveryError) as err:
        svc.Send(MSG)
    assert str(err.value).startswith("connection lost after the final dot; not retried")
    assert "outcome unknown" not in str(err.value) and sender.attempts == 1


def test_delivery_outcomes_keep_their_stored_words():
    assert [o.value for o in DeliveryOutcome] == ["rejected", "transient", "unknown"]
    assert DeliveryError("x").outcome == "rejected"
    assert DeliveryError("x", retriable=True).outcome is DeliveryOutcome.TRANSIENT
    with pytest.raises(ValueError):
        DeliveryError("x", outcome="lost")
