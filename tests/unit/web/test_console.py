"""The read-only web console with FastAPI's TestClient on a project written by the test."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from postline.project import open_project
from postline.state.ledger import Outcome, Place, SqliteLedger, ledger_path
from postline.state.outbox import Outbox
from postline.web.app import create_app

TOKEN = "console-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "pl41ntext-S3cret-value"

PROJECT = """\
kind: Secret
name: Creds
values:
  password: env:CONSOLE_TEST_PASSWORD
---
kind: EmailConnection
name: Mail
description: "Alice's <script>alert(1)</script> mailbox"
incoming: {protocol: imap, host: 127.0.0.1, port: 10993, security: tls,
           user: alice@example.test, credential: {type: secret, secret: Creds.password}}
outgoing: {protocol: smtp, host: 127.0.0.1, port: 10587, security: starttls,
           user: alice@example.test, credential: {type: secret, secret: Creds.password}}
---
kind: EmailSource
name: Inbox
description: The inbox
connection: Mail
folders: {input: INBOX}
---
kind: EmailService
name: Notify
description: Sends notices
connection: Mail
---
kind: Workflow
name: Flow
source: Inbox
services: {Notify: Notify}
sinks:
  - {type: jsonl, path: out/records.jsonl}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSOLE_TEST_PASSWORD", PASSWORD)
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    (tmp_path / "assets.yaml").write_text(PROJECT)
    return open_project(tmp_path)


@pytest.fixture
def client(project):
    with TestClient(create_app(project, token=TOKEN), follow_redirects=False) as c:
        yield c


def login(client) -> None:
    r = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert r.status_code == 303


@pytest.mark.parametrize("path", ["/", "/assets/EmailSource/Inbox", "/sources/Inbox",
                                  "/services/Notify"])
def test_pages_redirect_to_login_without_token(client, path):
    r = client.get(path)
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next={path}"
    r = client.get(path, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})
    assert r.status_code == 303


def test_login_form_is_served(client):
    r = client.get("/login?next=/services/Notify")
    assert r.status_code == 200
    assert "name='token'" in r.text and "value='/services/Notify'" in r.text


def test_wrong_token_is_refused(client):
    r = client.post("/login", data={"token": "not-the-token"})
    assert r.status_code == 401 and "Wrong token." in r.text
    assert "set-cookie" not in r.headers
    assert client.get("/").status_code == 303


def test_right_token_sets_a_session_cookie_not_the_token(client):
    r = client.post("/login", data={"token": TOKEN, "next": "/assets/EmailService/Notify"})
    assert r.status_code == 303 and r.headers["location"] == "/assets/EmailService/Notify"
    cookie = r.headers["set-cookie"]
    assert "postline_session=" in cookie and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower() and TOKEN not in cookie
    assert client.get("/").status_code == 200
    r = client.post("/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/").status_code == 303


@pytest.mark.parametrize("next_", ["https://evil.test/", "//evil.test/x", "javascript:alert(1)"])
def test_login_never_redirects_off_site(client, next_):
    r = client.post("/login", data={"token": TOKEN, "next": next_})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_a_forged_cookie_is_refused(client):
    client.cookies.set("postline_session", TOKEN)
    assert client.get("/").status_code == 303


def test_index_lists_assets_by_kind_with_links(client):
    login(client)
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for kind, name in [("Secret", "Creds"), ("EmailConnection", "Mail"),
                       ("EmailSource", "Inbox"), ("EmailService", "Notify"),
                       ("Workflow", "Flow")]:
        assert f'href="/assets/{kind}/{name}"' in r.text
        assert f"<h2>{kind} " in r.text
    assert "assets.yaml:6" in r.text  # file:line of the connection
    assert "0 error(s)" in r.text and "The inbox" in r.text


def test_description_is_escaped(client):
    login(client)
    for path in ("/", "/assets/EmailConnection/Mail"):
        text = client.get(path).text
        assert "<script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_asset_page_shows_resolved_asset_and_usage(client):
    r = client.get("/assets/EmailConnection/Mail", headers=AUTH)
    assert r.status_code == 200
    assert "Used by 2 asset(s)" in r.text
    assert 'href="/assets/EmailSource/Inbox"' in r.text
    assert 'href="/assets/EmailService/Notify"' in r.text
    assert "<code>connection</code>" in r.text
    assert "127.0.0.1" in r.text and "starttls" in r.text  # the resolved fields


def test_usage_names_the_field_path(client):
    r = client.get("/assets/Secret/Creds", headers=AUTH)
    assert "Used by 1 asset(s)" in r.text
    assert "incoming.credential.secret" in r.text and 'href="/assets/EmailConnection/Mail"' in r.text
    assert "env:CONSOLE_TEST_PASSWORD" in r.text  # where it is stored, never the value


def test_unused_asset_says_so(client):
    r = client.get("/assets/Workflow/Flow", headers=AUTH)
    assert "Not used anywhere else" in r.text
    assert "Used by" not in r.text


def test_unknown_asset_is_404_with_a_suggestion(client):
    r = client.get("/assets/EmailService/Notfy", headers=AUTH)
    assert r.status_code == 404 and "no EmailService named" in r.text and "Notify" in r.text
    assert client.get("/sources/Nope", headers=AUTH).status_code == 404
    assert client.get("/services/Inbox", headers=AUTH).status_code == 404


def test_no_page_shows_a_secret_value(client, project):
    _ledger_with_rows(project)
    login(client)
    pages = ["/", "/sources/Inbox", "/services/Notify", "/login"]
    pages += [f"/assets/{e.kind}/{e.name}" for e in project.entries()]
    for path in pages:
        r = client.get(path)
        assert r.status_code == 200, path
        assert PASSWORD not in r.text and TOKEN not in r.text, path


def test_ledger_page_without_a_ledger(client, project):
    r = client.get("/sources/Inbox", headers=AUTH)
    assert r.status_code == 200 and "No ledger yet" in r.text
    assert not ledger_path(project.state_dir).exists()  # looking never creates it


def _ledger_with_rows(project) -> None:
    ledger = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        places = [Place(key=f"Mail/INBOX/1/{i}", connection="Mail", folder="INBOX",
                        folder_version="1", server_id=str(i)) for i in (1, 2)]
        ledger.acquire("Inbox", places)
        ledger.finish("Inbox", [
            Outcome(key="Mail/INBOX/1/1", state="done", subject="Invoice <42>"),
            Outcome(key="Mail/INBOX/1/2", state="failed", subject="Broken",
                    reason="processor raised ValueError")])
        ledger.acquire("Other", [Place(key="x", connection="Mail", folder="INBOX",
                                       folder_version="1", server_id="9")])
    finally:
        ledger.close()


def test_ledger_page_with_entries(client, project):
    _ledger_with_rows(project)
    r = client.get("/sources/Inbox", headers=AUTH)
    assert r.status_code == 200
    assert "done: <b>1</b>" in r.text and "failed: <b>1</b>" in r.text
    assert "acquired: <b>0</b>" in r.text  # the other source's entry is not counted
    assert "Mail/INBOX/1/2" in r.text and "processor raised ValueError" in r.text
    assert "Invoice &lt;42&gt;" in r.text and "Latest 2 entries" in r.text


def test_outbox_page_without_and_with_an_outbox(client, project):
    r = client.get("/services/Notify", headers=AUTH)
    assert r.status_code == 200 and "No outbox yet" in r.text
    assert not (project.state_dir / "outbox.sqlite").exists()
    outbox = Outbox(project.state_dir / "outbox.sqlite")
    try:
        mail_id = outbox.enqueue(service="Notify", message={"Subject": "Hi"},
                                 message_id="<a@b>", date="Wed, 25 Nov 2026 09:00:00 +0000",
                                 summary="ann@example.test | Hi <there>", limit=100)
        outbox.mark(mail_id, "failed", reason="550 5.1.1 no such user")
    finally:
        outbox.close()
    r = client.get("/services/Notify", headers=AUTH)
    assert "failed: <b>1</b>" in r.text and "queued: <b>0</b>" in r.text
    assert "ann@example.test | Hi &lt;there&gt;" in r.text and "550 5.1.1 no such user" in r.text


def test_pages_link_to_ledger_and_outbox(client):
    assert 'href="/sources/Inbox"' in client.get("/assets/EmailSource/Inbox", headers=AUTH).text
    assert 'href="/services/Notify"' in client.get("/assets/EmailService/Notify",
                                                   headers=AUTH).text


def test_api_is_unchanged(client):
    assert client.get("/api/health").json()["status"] == "ok"
    r = client.post("/api/services/Notify/send", json={})
    assert r.status_code == 401 and r.json()["type"] == "Unauthorized"
    assert "/login" not in client.get("/openapi.json").text


def test_pages_load_nothing_external(client):
    text = client.get("/", headers=AUTH).text
    # the one script is the console's own, served by postline (issue 17: fields that show
    # and hide with the choices made); nothing else is loaded
    assert re.findall(r"<(?:script|link|img)\b[^>]*>", text) == [
        '<script src="/static/console.js" defer></script>'[:-len("</script>")]]
    assert "http://" not in text and "https://" not in text
    js = client.get("/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "http://" not in js.text and "https://" not in js.text
