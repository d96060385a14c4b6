"""The console against the local mail stack: test a connection and watch its steps, follow
the Asset Usage box, retry a failed mail."""

from __future__ import annotations

from conftest import shot


def test_test_connection_shows_every_step(page, console, mailbox_user):
    page.goto(console.url + "/assets/EmailConnection/LocalMail")
    page.get_by_role("button", name="Test connection").click()
    page.wait_for_url("**/assets/EmailConnection/LocalMail/test")
    results = page.locator(".result")
    results.first.wait_for()
    assert results.count() == 2
    incoming = page.locator(".result[data-direction=incoming]").inner_text()
    outgoing = page.locator(".result[data-direction=outgoing]").inner_text()
    assert "imap" in incoming and "OK" in incoming
    assert "smtp" in outgoing and "OK" in outgoing
    steps = page.locator("#steps tr.step")
    names = [steps.nth(i).locator("td").nth(1).inner_text() for i in range(steps.count())]
    for step in ("dns", "tcp", "tls", "greeting", "authentication", "folders"):
        assert step in names, names
    assert all(t.endswith(" ms") for t in
               page.locator("#steps tr.step td:nth-child(3)").all_inner_texts())
    shot(page, "test-connection")


def test_a_failed_step_shows_the_fix(page, console, mailbox_user):
    # the wrong password for the demo user: authentication fails, the fix says what to do
    page.goto(console.url + "/assets/EmailConnection/LocalPop3/edit")
    page.get_by_role("group", name="Incoming mail server").get_by_label(
        "User", exact=True).fill("nobody-" + mailbox_user.email)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/EmailConnection/LocalPop3?saved=1")
    page.get_by_role("button", name="Test connection").click()
    result = page.locator(".result[data-direction=incoming]")
    result.wait_for()
    text = result.inner_text()
    assert "FAILED" in text and "Error:" in text and "Fix:" in text
    failed = page.locator("#steps tr.step", has=page.locator(".step-fail"))
    assert failed.count() >= 1
    shot(page, "test-connection-failed")


def test_follow_asset_usage_from_a_connection_to_its_source(page, console):
    page.goto(console.url + "/assets/EmailConnection/LocalMail")
    box = page.locator(".box", has_text="Asset usage")
    assert "Used by 2 asset(s)" in box.inner_text()
    page.get_by_role("link", name="Inbox").click()
    page.wait_for_url("**/assets/EmailSource/Inbox")
    assert page.get_by_role("heading", name="EmailSource Inbox").is_visible()
