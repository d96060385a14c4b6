"""The other kinds' forms, renaming through the Asset Usage list, deleting, Secret values
that are written but never shown."""

from __future__ import annotations

import pytest
from browser_helpers import REPO, keyed_copy, shot


@pytest.fixture
def key_file(tmp_path):
    return tmp_path / "keys" / "postline.key"


@pytest.fixture
def console_project(tmp_path, key_file):
    return keyed_copy(REPO / "examples" / "local", tmp_path / "local", key_file)


@pytest.fixture
def console_env(key_file):
    return {"POSTLINE_KEY_FILE": str(key_file), "POSTLINE_DEMO_PASSWORD": "alice-pass"}


def test_rename_updates_every_reference_or_none(page, console):
    source, service = console.project / "source.yaml", console.project / "service.yaml"
    before = source.read_text(), service.read_text()
    page.goto(console.url + "/assets/EmailConnection/LocalMail/edit")
    page.get_by_label("Name", exact=True).fill("DemoMail")
    page.get_by_role("button", name="Save").click()
    preview = page.locator(".rename")
    text = preview.inner_text()
    assert "Renaming EmailConnection/LocalMail to DemoMail" in text
    assert "EmailService/Notify" in text and "EmailSource/Inbox" in text
    assert (source.read_text(), service.read_text()) == before     # nothing yet
    shot(page, "rename-preview")
    page.get_by_label("Rename and update 2 reference(s)").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/EmailConnection/DemoMail?saved=1")
    assert source.read_text() == before[0].replace("connection: LocalMail",
                                                   "connection: DemoMail")
    assert service.read_text() == before[1].replace("connection: LocalMail",
                                                    "connection: DemoMail")
    r = console.postline("validate", str(console.project), env=console.env)
    assert r.returncode == 0, r.stdout + r.stderr
    # the Asset Usage box follows the new name
    page.locator("details.usage summary").click()
    page.locator("details.usage").get_by_role("link", name="Notify").click()
    page.wait_for_url("**/assets/EmailService/Notify")


def test_delete_is_refused_while_used(page, console):
    page.goto(console.url + "/assets/EmailConnection/LocalMail")
    page.get_by_role("button", name="Delete").click()      # confirmed
    alert = page.get_by_role("alert")
    assert "EmailConnection/LocalMail is used by EmailSource/Inbox, EmailService/Notify" \
        in alert.inner_text() or "EmailConnection/LocalMail is used by EmailService/Notify, " \
        "EmailSource/Inbox" in alert.inner_text()
    assert "name: LocalMail" in (console.project / "connection.yaml").read_text()
    page.goto(console.url + "/assets/EmailConnection/LocalPop3")
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(console.url + "/?done=**")
    assert "deleted EmailConnection/LocalPop3" in page.get_by_role("status").inner_text()
    text = (console.project / "connection.yaml").read_text()
    assert "LocalPop3" not in text and "name: LocalMail" in text


def test_secret_values_are_written_sealed_and_never_shown(page, console):
    page.goto(console.url + "/assets/Secret/DemoSecrets/edit")
    field = page.get_by_label("password", exact=True)
    assert field.get_attribute("type") == "password" and field.input_value() == ""
    page.get_by_label("New key").fill("api_token")
    page.get_by_label("New value").fill("s3cr3t-typed-value")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/Secret/DemoSecrets?saved=1")
    text = (console.project / "secrets.yaml").read_text()
    assert "api_token: sealed:" in text and "s3cr3t-typed-value" not in text
    assert "password: env:POSTLINE_DEMO_PASSWORD" in text          # the other key kept
    assert "s3cr3t-typed-value" not in page.content()
    page.get_by_role("link", name="Edit").click()
    assert page.get_by_label("api_token", exact=True).input_value() == ""
    assert "s3cr3t-typed-value" not in page.content()
    page.goto(console.url + "/audit")
    assert "s3cr3t-typed-value" not in page.content() and "values.api_token" in page.content()
    r = console.postline("secret", "list", str(console.project), env=console.env)
    assert "api_token" in r.stdout and "s3cr3t-typed-value" not in r.stdout
    # sealed to the project's key: the private key opens it
    from postline.project import load_project

    project = load_project(console.project, environ=console.env)
    assert project.secret("DemoSecrets.api_token") == "s3cr3t-typed-value"


def test_new_service_source_workflow_and_environment(page, console):
    page.get_by_role("link", name="New EmailService").click()
    page.get_by_label("Name", exact=True).fill("Alerts")
    page.get_by_label("Connection", exact=True).fill("LocalMail")
    page.get_by_label("Max messages").fill("12")
    page.get_by_label("File").fill("service.yaml")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/EmailService/Alerts?saved=1")
    page.goto(console.url + "/new/Environment")
    page.get_by_label("Name", exact=True).fill("Extra")
    page.get_by_label("Variables").fill("GREETING: hello\nTARGET: ${env:HOME}")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/Environment/Extra?saved=1")
    page.goto(console.url + "/new/Workflow")
    page.get_by_label("Name", exact=True).fill("Second")
    page.get_by_label("Source", exact=True).fill("Inbox")
    page.get_by_label("Services").fill("Alerts: Alerts")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/Workflow/Second?saved=1")
    shot(page, "workflow")
    text = (console.project / "service.yaml").read_text()
    assert "name: Alerts" in text and "throttle:\n  max_messages: 12\n  per: minute" in text
    r = console.postline("validate", str(console.project), env=console.env)
    assert r.returncode == 0, r.stdout + r.stderr
