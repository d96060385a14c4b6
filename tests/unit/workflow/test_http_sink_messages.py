"""The http sink's errors name the receiver without the secrets webhook URLs carry."""

from __future__ import annotations

import httpx
import pytest

from postline.errors import DeliveryError
from postline.logs import register_secret
from postline.protocols.base import MessageRef, RawMessage
from postline.workflow.sinks import HttpSink

RAW = RawMessage(ref=MessageRef(folder="INBOX", folder_version="1", id="1"), data=b"x")


def sink(url: str, status: int) -> HttpSink:
    s = HttpSink(url=url, headers={}, timeout=1, retries=1, sleep=lambda _s: None,
                 transport=httpx.MockTransport(lambda req: httpx.Response(status)))
    s.open()
    return s


def test_a_refusal_names_host_and_path_but_not_user_info_or_query():
    with pytest.raises(DeliveryError) as err:
        sink("https://bot:hunter22@hooks.example.test/in?token=tok-1234", 403).write(
            {"key": "k1"}, RAW)
    text = str(err.value)
    assert "https://hooks.example.test/in" in text and "HTTP 403" in text
    assert "hunter22" not in text and "tok-1234" not in text


def test_a_url_read_from_a_secret_is_masked_after_the_retries():
    url = "https://hooks.example.test/services/T0/B0/s3cr3t-path-part"
    register_secret("s3cr3t-path-part")
    with pytest.raises(DeliveryError) as err:
        sink(url, 503).write({"key": "k1"}, RAW)
    assert err.value.retriable
    assert "s3cr3t-path-part" not in str(err.value)
    assert "after 2 attempt(s): HTTP 503" in str(err.value)
