"""The console against the local mail stack: test a connection and watch its steps, follow
the Asset Usage box, retry a failed mail."""

from __future__ import annotations

import subprocess

import pytest
from browser_helpers import POSTLINE, REPO, free_port, keyed_copy, shot


@pytest.fixture
def status_port():
    return free_port()


@pytest.fixture
def console_args(status_port):
    return ["--status-url", f"http://127.0.0.1:{status_port}/status"]


@pytest.fixture
def key_file(tmp_path):
    return tmp_path / "keys" / "postline.key"


@pytest.fixture
def console_project(tmp_path, key_file):
    """examples/local with a key pair of its own: the device flow's token cache is sealed."""
    return keyed_copy(REPO / "examples" / "local", tmp_path / "local", key_file)


@pytest.fixture
def console_env(key_file):
    return {"POSTLINE_KEY_FILE": str(key_file)}


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
    box = page.locator("details.usage")
    assert "Used by 2 asset(s)" in box.inner_text()
    assert not box.get_by_role("link", name="Inbox").is_visible()   # collapsed at first
    box.locator("summary").click()                                   # expand ...
    box.get_by_role("link", name="Inbox").click()                    # ... and follow
    page.wait_for_url("**/assets/EmailSource/Inbox")
    assert page.get_by_role("heading", name="EmailSource Inbox").is_visible()


def test_sign_in_with_device_flow(page, console, mail_stack, mailbox_user):
    # switch the incoming side of the demo connection to the device flow, from the form
    page.goto(console.url + "/assets/EmailConnection/LocalMail/edit")
    incoming = page.get_by_role("group", name="Incoming mail server")
    incoming.get_by_label("Credential type").select_option(label="OAuth (Device Flow)")
    incoming.get_by_label("Authority").fill(mail_stack.oidc_authority)
    incoming.get_by_label("Client ID").fill(mail_stack.device_client_id)
    incoming.get_by_label("Scopes").fill(" ".join(mail_stack.mail_scopes))
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/assets/EmailConnection/LocalMail?saved=1")
    assert console.postline("validate", str(console.project)).returncode == 0
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/assets/EmailConnection/LocalMail/signin")
    link = page.locator("#signin-link").get_attribute("href")
    code = page.locator("#signin-code").inner_text()
    assert link.startswith(mail_stack.oidc_issuer) and code and code in link
    assert page.locator(".qr svg").count() == 1
    shot(page, "sign-in")
    mail_stack.approve_device(link, login=mailbox_user.email)
    done = page.locator(".signed-in")
    done.wait_for()   # the page asks again every 2 s: no reload
    assert f"Signed in as {mailbox_user.email} for incoming" in done.inner_text()
    assert "the token expires 20" in done.inner_text()
    shot(page, "signed-in")


def test_runtime_view_updates_while_a_run_goes_on(page, console, mail_stack, mailbox_user,
                                                  status_port):
    mail_stack.deliver(mailbox_user.email, b"From: a@example.test\r\nTo: "
                       + mailbox_user.email.encode() + b"\r\nSubject: runtime view\r\n"
                       b"Message-ID: <runtime-1@example.test>\r\n\r\nhello\r\n")
    page.goto(console.url + "/runtime")
    assert "cannot read" in page.locator("#runtime").inner_text()   # no run yet
    run = subprocess.Popen([POSTLINE, "run", str(console.project), "--status",
                            f"127.0.0.1:{status_port}"], env=console.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        row = page.locator("tr[data-workflow=InboxToFiles]")
        row.wait_for()   # no reload: the page asks again every 2 s
        page.locator("tr[data-workflow=InboxToFiles] td.state", has_text="connected").wait_for()
        page.locator("tr[data-workflow=InboxToFiles]", has_text="done: 1").wait_for()
        assert "Inbox" in row.inner_text()
        assert page.locator("table", has_text="Notify").count() == 1
        shot(page, "runtime")
    finally:
        run.terminate()
        run.wait(timeout=60)


def test_retry_a_failed_mail_from_the_ledger(page, console, mail_stack, mailbox_user):
    import base64

    # the demo processor forwards an urgent subject; U+2028 in it makes the mail fail
    subject = "urgent\u2028report"
    encoded = base64.b64encode(subject.encode()).decode()
    raw_subject = f"=?utf-8?b?{encoded}?="   # as the stack's subjects() lists it
    mail_stack.deliver(mailbox_user.email, b"From: a@example.test\r\nTo: "
                       + mailbox_user.email.encode() + b"\r\nSubject: =?utf-8?b?"
                       + encoded.encode() + b"?=\r\nMessage-ID: <fail-1@example.test>\r\n"
                       b"\r\nplease\r\n")
    r = subprocess.run([POSTLINE, "run", str(console.project), "--once"], env=console.env,
                       capture_output=True, text=True, timeout=120)
    assert "failed" in r.stderr + r.stdout
    assert mail_stack.subjects(mailbox_user.email, "Processed/Errors") == [raw_subject]
    page.goto(console.url + "/sources/Inbox")
    assert "failed: 1" in page.locator(".counts").inner_text()
    shot(page, "ledger-failed")
    assert page.get_by_role("button", name="Retry all failed mails").is_visible()
    row = page.locator("tr", has=page.get_by_text("failed", exact=True))
    row.get_by_role("button", name="Retry", exact=True).click()   # this one mail, confirmed
    page.wait_for_url("**/sources/Inbox?done=**")
    said = page.get_by_role("status").inner_text()
    assert "retrying 1 mail of source Inbox; 1 moved back to 'INBOX'" in said
    assert mail_stack.subjects(mailbox_user.email, "INBOX") == [raw_subject]
    assert "failed: 0" in page.locator(".counts").inner_text()
