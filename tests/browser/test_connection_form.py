"""The EmailConnection form in a real browser: the seed's labels, fields that follow the
choices, saving (validated first, comments kept), editing, and refusals."""

from __future__ import annotations

import re

import httpx
from browser_helpers import shot


def _form(page, console):
    page.get_by_role("link", name="New EmailConnection").click()
    page.wait_for_url(console.url + "/new/EmailConnection")


def test_fields_follow_type_protocol_and_credential_type(page, console):
    _form(page, console)
    incoming = page.get_by_role("group", name="Incoming mail server")
    outgoing = page.get_by_role("group", name="Outgoing mail server")
    for label in ("Name", "Description", "Email Connection Type"):
        assert page.get_by_label(label, exact=True).is_visible()
    for label in ("Incoming mail server protocol", "User", "Host", "Port",
                  "Connection security", "Check server identity", "Credential type", "Secret"):
        assert incoming.get_by_label(label, exact=True).is_visible(), label
    # the port shows the default of the protocol and security chosen
    port = incoming.get_by_label("Port", exact=True)
    assert port.get_attribute("placeholder") == "993"
    incoming.get_by_label("Connection security").select_option(label="STARTTLS")
    assert port.get_attribute("placeholder") == "143"
    incoming.get_by_label("Incoming mail server protocol").select_option(label="POP3")
    assert port.get_attribute("placeholder") == "110"
    incoming.get_by_label("Connection security").select_option(label="SSL/TLS")
    assert port.get_attribute("placeholder") == "995"
    assert outgoing.get_by_label("Port", exact=True).get_attribute("placeholder") == "587"
    # each credential type shows only its own fields
    incoming.get_by_label("Credential type").select_option(label="OAuth (Client Credentials)")
    for label in ("Authority", "Client ID", "Scopes", "Client secret"):
        assert incoming.get_by_label(label, exact=True).is_visible(), label
    assert not incoming.get_by_label("Secret", exact=True).is_visible()
    incoming.get_by_label("Credential type").select_option(label="OAuth (Device Flow)")
    assert incoming.get_by_label("Client ID", exact=True).is_visible()
    assert not incoming.get_by_label("Client secret", exact=True).is_visible()
    incoming.get_by_label("Credential type").select_option(label="None")
    assert not incoming.get_by_label("Authority", exact=True).is_visible()
    # security none: the identity check does not apply
    incoming.get_by_label("Connection security").select_option(label="None (plaintext)")
    assert not incoming.get_by_label("Check server identity").is_visible()
    # "No outgoing emails" hides the outgoing fields
    outgoing.get_by_label("Outgoing mail server protocol").select_option(
        label="No outgoing emails")
    assert not outgoing.get_by_label("Host", exact=True).is_visible()
    assert incoming.get_by_label("Host", exact=True).is_visible()
    shot(page, "connection-form-new")
    # Microsoft 365: only the two OAuth credential types, no incoming/outgoing servers
    page.get_by_label("Email Connection Type").select_option(label="Microsoft 365")
    assert not incoming.is_visible() and not outgoing.is_visible()
    m365 = page.get_by_role("group", name="Microsoft 365")
    assert m365.get_by_label("Mailbox").is_visible()
    options = m365.get_by_label("Credential type").locator("option").all_inner_texts()
    assert options == ["OAuth (Client Credentials)", "OAuth (Device Flow)"]
    m365.get_by_label("Credential type").select_option(label="OAuth (Client Credentials)")
    assert m365.get_by_label("Client secret").is_visible()
    shot(page, "connection-form-microsoft365")


def test_create_save_validate_and_edit(page, console):
    path = console.project / "connection.yaml"
    before = path.read_text()
    comments = [ln for ln in before.splitlines() if ln.lstrip().startswith("#")]
    _form(page, console)
    page.get_by_label("Name", exact=True).fill("Partner")
    page.get_by_label("Description").fill("The partner's mailbox")
    incoming = page.get_by_role("group", name="Incoming mail server")
    outgoing = page.get_by_role("group", name="Outgoing mail server")
    incoming.get_by_label("Host", exact=True).fill("${lay:MAIL_HOST}")
    # the value a macro expands to shows as it is typed; a secret's as ***
    host_out = incoming.locator("output[for='incoming.host']")
    page.wait_for_function("o => o.textContent === '= 127.0.0.1'", arg=host_out.element_handle())
    incoming.get_by_label("User", exact=True).fill("${sec:DemoSecrets.password}")
    user_out = incoming.locator("output[for='incoming.user']")
    page.wait_for_function("o => o.textContent === '= ***'", arg=user_out.element_handle())
    incoming.get_by_label("User", exact=True).fill("${lay:NOPE}")
    page.wait_for_function("o => o.textContent.startsWith('cannot expand')",
                           arg=user_out.element_handle())
    incoming.get_by_label("User", exact=True).fill("partner@example.test")
    incoming.get_by_label("Secret", exact=True).fill("DemoSecrets.password")
    outgoing.get_by_label("Outgoing mail server protocol").select_option(
        label="No outgoing emails")
    page.get_by_label("File").fill("connection.yaml")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(console.url + "/assets/EmailConnection/Partner?saved=1")
    assert page.get_by_role("status").inner_text() == "Saved."
    shot(page, "connection-saved")
    after = path.read_text()
    assert after.startswith(before)            # the file's documents and comments untouched
    assert "name: Partner" in after and "host: ${lay:MAIL_HOST}" in after
    r = console.postline("validate", str(console.project))
    assert r.returncode == 0, r.stdout + r.stderr
    # edit: the macro's value is shown resolved beside the field
    page.get_by_role("link", name="Edit").click()
    incoming = page.get_by_role("group", name="Incoming mail server")
    assert incoming.locator("output[for='incoming.host']").inner_text() == "= 127.0.0.1"
    incoming.get_by_label("Port", exact=True).fill("10995")
    incoming.get_by_label("Incoming mail server protocol").select_option(label="POP3")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/EmailConnection/Partner?saved=1")
    edited = path.read_text()
    assert "protocol: pop3" in edited and "port: 10995" in edited
    assert [ln for ln in edited.splitlines() if ln.lstrip().startswith("#")] == comments
    assert edited.split("name: Partner")[0] == before + "---\nkind: EmailConnection\n"
    assert console.postline("validate", str(console.project)).returncode == 0
    # the audit log says who changed what
    page.get_by_role("link", name="Audit log").click()
    table = page.locator("table").inner_text()
    assert "edit" in table and "EmailConnection/Partner" in table
    assert "incoming.protocol" in table and "pop3" in table
    shot(page, "audit-log")


def test_problems_show_beside_their_fields_and_nothing_is_written(page, console):
    files = {p.name: p.read_text() for p in console.project.glob("*.yaml")}
    _form(page, console)
    page.get_by_label("Name", exact=True).fill("Broken")
    incoming = page.get_by_role("group", name="Incoming mail server")
    incoming.get_by_label("Secret", exact=True).fill("DemoSecrets.nope")
    page.get_by_role("button", name="Save").click()
    host = incoming.locator(".field", has=page.locator("[id='incoming.host']"))
    assert re.search(r"EmailConnection\.yaml:\d+: EmailConnection/Broken: incoming\.host: "
                     r"is required when protocol is imap", host.get_by_role("alert").inner_text())
    secret = incoming.locator(".field", has=page.locator("[id='incoming.credential.secret']"))
    assert "Secret 'DemoSecrets' has no key 'nope'" in secret.get_by_role("alert").inner_text()
    shot(page, "connection-form-problems")
    assert {p.name: p.read_text() for p in console.project.glob("*.yaml")} == files
    # the value typed is still there to fix
    assert incoming.get_by_label("Secret", exact=True).input_value() == "DemoSecrets.nope"


def test_a_file_changed_on_disk_is_not_overwritten(page, console):
    page.goto(console.url + "/assets/EmailConnection/LocalPop3/edit")
    path = console.project / "connection.yaml"
    changed = path.read_text().replace("receive only", "receive only (edited elsewhere)")
    path.write_text(changed)
    page.get_by_label("Description").fill("mine")
    page.get_by_role("button", name="Save").click()
    alert = page.locator(".conflict")
    assert "changed on disk since this form was opened" in alert.inner_text()
    assert path.read_text() == changed
    alert.get_by_role("link", name="Reload the form").click()
    assert "edited elsewhere" in page.get_by_label("Description").input_value()


def test_a_form_posted_from_another_origin_is_refused(page, console, browser):
    path = console.project / "connection.yaml"
    before = path.read_text()
    # the logged-in browser visits another site whose page posts to the console
    evil = browser.new_page()
    evil.route("http://evil.test/", lambda route: route.fulfill(
        content_type="text/html", body=f"""<form method=post
        action="{console.url}/assets/EmailConnection/LocalPop3/edit">
        <input name=name value=LocalPop3><input name=description value=pwned>
        <button>Win a prize</button></form>"""))
    evil.goto("http://evil.test/")
    evil.get_by_role("button", name="Win a prize").click()
    evil.wait_for_load_state()
    # SameSite=Strict keeps the session cookie at home: the console asks to log in
    assert "/login" in evil.url or "Refused" in evil.content()
    evil.close()
    # with the cookie (as if SameSite failed) and the wrong Origin: refused by the Origin check
    cookie = {c["name"]: c["value"] for c in browser.cookies(console.url)}
    r = httpx.post(console.url + "/assets/EmailConnection/LocalPop3/edit",
                   data={"name": "LocalPop3", "description": "pwned"},
                   headers={"Origin": "http://evil.test"}, cookies=cookie)
    assert r.status_code == 403 and "another site" in r.text
    # same origin, but no CSRF token: refused too
    r = httpx.post(console.url + "/assets/EmailConnection/LocalPop3/edit",
                   data={"name": "LocalPop3", "description": "pwned"}, cookies=cookie)
    assert r.status_code == 403 and "security token" in r.text
    assert path.read_text() == before
