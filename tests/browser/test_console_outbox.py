"""Retrying a failed mail from the outbox page, against a misbehaving SMTP server that
rejects and then accepts; and the read-only console."""

from __future__ import annotations

import httpx
import pytest
from browser_helpers import shot

from postline.testing.ports import wait_until
from postline.testing.smtp_faults import FaultyServer

MSG = {"From": "app@example.test", "To": [{"Address": "ann@example.test"}],
       "Subject": "console retry", "Body": "<p>hello</p>"}


@pytest.fixture
def smtp():
    with FaultyServer(mode="reject") as server:
        yield server


@pytest.fixture
def console_project(tmp_path, smtp):
    root = tmp_path / "source"
    root.mkdir()
    (root / "assets.yaml").write_text(
        "# the SMTP server of the test\n"
        f"kind: EmailConnection\nname: Out\noutgoing:\n  protocol: smtp\n  host: 127.0.0.1\n"
        f"  port: {smtp.port}\n  security: none\n  credential: {{type: none}}\n---\n"
        "kind: EmailService\nname: Notify\nconnection: Out\n"
        "retry: {max_attempts: 1, min_backoff: 0.05, max_backoff: 0.2}\n")
    return root


def _counts(console) -> str:
    r = httpx.get(console.url + "/services/Notify",
                  headers={"Authorization": f"Bearer {console.token}"})
    return r.text


def test_retry_a_failed_mail(page, console, smtp):
    auth = {"Authorization": f"Bearer {console.token}"}
    r = httpx.post(console.url + "/api/services/Notify/send-and-forget", json=MSG,
                   headers=auth)
    assert r.status_code == 202
    assert wait_until(lambda: "failed: <b>1</b>" in _counts(console), timeout=30)
    smtp.mode = "accept"
    page.goto(console.url + "/services/Notify")
    assert "554 5.7.1" in page.locator("table").inner_text()
    shot(page, "outbox-failed")
    row = page.locator("tr", has=page.get_by_text("failed", exact=True))
    assert row.get_by_role("button", name="Retry", exact=True).is_visible()
    page.get_by_role("button", name="Retry all failed mails").click()   # confirmed
    page.wait_for_url("**/services/Notify?done=*")
    assert "queued 1 mail(s) of Notify again" in page.get_by_role("status").inner_text()
    assert wait_until(lambda: len(smtp.received) == 1, timeout=30)
    assert wait_until(lambda: "sent: <b>1</b>" in _counts(console), timeout=30)
    page.get_by_role("link", name="Audit log").click()
    assert "outbox retry" in page.locator("table").inner_text()


@pytest.mark.serve_args("--read-only")
def test_read_only_console_changes_nothing(page, console):
    assert page.get_by_text("read-only").first.is_visible()
    assert page.get_by_role("link", name="New EmailConnection").count() == 0
    page.goto(console.url + "/assets/EmailConnection/Out")
    assert page.get_by_role("link", name="Edit").count() == 0
    assert page.get_by_role("button", name="Test connection").is_visible()
    page.goto(console.url + "/services/Notify")
    assert page.get_by_role("button", name="Retry all failed mails").count() == 0
    r = page.request.post(console.url + "/services/Notify/retry", form={"csrf": "x"})
    assert r.status == 403 and "read-only" in r.text()
    r = page.request.get(console.url + "/new/EmailConnection")
    assert r.status == 403
