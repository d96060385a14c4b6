"""The console in a real browser: log in, the main pages, screenshots kept as artifacts."""

from __future__ import annotations

from browser_helpers import shot


def test_log_in_and_see_the_main_pages(page, console):
    assert page.get_by_role("heading", name="EmailConnection").is_visible()
    shot(page, "project")
    page.get_by_role("link", name="LocalMail").first.click()
    page.wait_for_url("**/assets/EmailConnection/LocalMail")
    assert page.get_by_role("button", name="Test connection").is_visible()
    shot(page, "connection")
    page.get_by_role("link", name="Edit").click()
    page.wait_for_url("**/assets/EmailConnection/LocalMail/edit")
    shot(page, "connection-form")
