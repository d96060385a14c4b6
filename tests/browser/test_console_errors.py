"""serve on a project with errors: the problems are listed, and fixed from the page."""

from __future__ import annotations

import pytest
from browser_helpers import shot


@pytest.fixture
def console_project(tmp_path):
    """A project with an error: a service that names a connection that does not exist."""
    import shutil

    from browser_helpers import REPO

    root = tmp_path / "broken"
    shutil.copytree(REPO / "examples" / "local", root,
                    ignore=shutil.ignore_patterns(".postline-state"))
    service = root / "service.yaml"
    service.write_text(service.read_text().replace("connection: LocalMail",
                                                   "connection: LocalMial"))
    return root


def test_serve_starts_on_a_project_with_errors_and_it_is_fixed_from_the_page(page, console):
    assert "the project has 1 error(s)" in console.log.read_text()
    problem = page.locator("ul.problems li.err")
    assert "service.yaml:8: EmailService/Notify: connection: no EmailConnection named " \
           "'LocalMial'" in problem.inner_text()
    assert "did you mean 'LocalMail'?" in problem.inner_text()
    shot(page, "project-with-errors")
    problem.get_by_role("link", name="fix").click()
    page.wait_for_url("**/assets/EmailService/Notify")
    page.get_by_role("link", name="Edit").click()
    connection = page.get_by_label("Connection", exact=True)
    assert connection.input_value() == "LocalMial"
    assert "did you mean 'LocalMail'?" in page.locator(".field", has=connection).get_by_role(
        "alert").inner_text()
    connection.fill("LocalMail")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/EmailService/Notify?saved=1")
    page.goto(console.url + "/")
    assert page.locator("ul.problems li.err").count() == 0
    r = console.postline("validate", str(console.project))
    assert r.returncode == 0, r.stdout + r.stderr
