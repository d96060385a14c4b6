"""The console in a real browser: log in, the main pages, screenshots kept as artifacts."""

from __future__ import annotations

import pytest
from browser_helpers import artifacts_dir, shot


# the demo's CA file where the dev stack would put it (no warning about a missing one)
@pytest.mark.serve_env(POSTLINE_STACK_CA_FILE="/etc/ssl/certs/ca-certificates.crt")
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
    # the README's picture: the top of the form, macros shown resolved
    page.set_viewport_size({"width": 960, "height": 900})
    page.screenshot(path=str(artifacts_dir() / "readme-connection-form.png"),
                    clip={"x": 0, "y": 0, "width": 960, "height": 1150}, full_page=True)
