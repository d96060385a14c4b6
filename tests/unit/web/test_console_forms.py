"""The console's forms over HTTP (TestClient): CSRF token, Origin check, audit log."""

from __future__ import annotations

import re
import stat

import pytest
from fastapi.testclient import TestClient
from test_console import PROJECT, TOKEN

from postline.project import load_project
from postline.web.app import create_app


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSOLE_TEST_PASSWORD", "x")
    monkeypatch.setenv("POSTLINE_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "assets.yaml").write_text("# keep me\n" + PROJECT)
    return tmp_path


def _client(root, **kw) -> TestClient:
    client = TestClient(create_app(load_project(root), token=TOKEN, **kw),
                        base_url="http://console.test")
    r = client.post("/login", data={"token": TOKEN, "next": "/"}, follow_redirects=False)
    assert r.status_code == 303
    return client


def _csrf(client, path: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).text).group(1)


FORM = {"name": "Mail", "description": "changed", "type": "standard",
        "incoming.protocol": "imap", "incoming.host": "127.0.0.1", "incoming.port": "10993",
        "incoming.security": "tls", "incoming.user": "alice@example.test",
        "incoming.check_server_identity": "true", "incoming.credential.type": "secret",
        "incoming.credential.secret": "Creds.password", "outgoing.protocol": "none"}


def test_a_save_needs_the_sessions_token_and_this_origin(root):
    client = _client(root)
    path = "/assets/EmailConnection/Mail/edit"
    page = client.get(path).text
    digest = re.search(r'name="digest" value="([0-9a-f]+)"', page).group(1)
    before = (root / "assets.yaml").read_text()
    r = client.post(path, data={**FORM, "digest": digest})
    assert r.status_code == 403 and "security token is missing" in r.text
    csrf = _csrf(client, path)
    r = client.post(path, data={**FORM, "digest": digest, "csrf": csrf},
                    headers={"Origin": "http://evil.test"})
    assert r.status_code == 403 and "another site" in r.text
    assert (root / "assets.yaml").read_text() == before
    r = client.post(path, data={**FORM, "digest": digest, "csrf": csrf},
                    headers={"Origin": "http://console.test"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("Mail?saved=1")
    text = (root / "assets.yaml").read_text()
    assert text.startswith("# keep me\n") and 'description: "changed"' in text
    assert "protocol: none" in text
    log = root / "state" / "audit.jsonl"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert '"asset": "EmailConnection/Mail"' in log.read_text()
    assert "description: changed" not in client.get("/audit").text   # a table, not YAML
    assert "changed" in client.get("/audit").text


def test_the_session_cookie_is_samesite_strict(root):
    client = TestClient(create_app(load_project(root), token=TOKEN))
    r = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert "httponly" in r.headers["set-cookie"].lower()


def test_read_only_refuses_every_change(root):
    client = _client(root, read_only=True)
    assert "New EmailConnection" not in client.get("/").text
    csrf = _csrf(client, "/")
    r = client.post("/assets/EmailConnection/Mail/edit", data={**FORM, "csrf": csrf})
    assert r.status_code == 403 and "read-only" in r.text
    r = client.post("/services/Notify/retry", data={"csrf": csrf})
    assert r.status_code == 403


def test_a_project_with_errors_is_served_with_its_problems(root):
    (root / "broken.yaml").write_text("kind: EmailService\nname: Broken\nconnection: Nope\n")
    client = _client(root)
    html = client.get("/").text
    assert "broken.yaml:3: EmailService/Broken: connection:" in html
    assert '<a href="/assets/EmailService/Broken">fix</a>' in html


def test_resolve_shows_macros_but_not_in_read_only(root, monkeypatch):
    monkeypatch.setenv("CONSOLE_TEST_HOST", "mail.example.test")
    client = _client(root)
    r = client.get("/resolve", params={"value": "${env:CONSOLE_TEST_HOST}:1"})
    assert r.text == "= mail.example.test:1"
    assert client.get("/resolve", params={"value": "${sec:Creds.password}"}).text == "= ***"
    assert client.get("/resolve", params={"value": "plain"}).text == ""
    client = _client(root, read_only=True)
    assert client.get("/resolve", params={"value": "${env:HOME}"}).status_code == 403


def test_a_state_store_is_created_through_its_form(root):
    client = _client(root)
    page = client.get("/new/StateStore").text
    for label in ("Type", "URL", "Password", "Schema", "Lease seconds", "Heartbeat seconds"):
        assert f">{label}</label>" in page
    r = client.post("/new/StateStore", data={
        "csrf": _csrf(client, "/new/StateStore"), "name": "Shared", "type": "postgresql",
        "url": "postgresql://127.0.0.1:5432/postline", "schema": "postline",
        "lease_seconds": "20", "file": "state.yaml"},
        headers={"Origin": "http://console.test"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    store = load_project(root).get("StateStore", "Shared")
    assert (store.type, store.url, store.lease_seconds) == (
        "postgresql", "postgresql://127.0.0.1:5432/postline", 20)


def test_the_source_form_offers_full_scan(root):
    client = _client(root)
    assert ">Full scan</label>" in client.get("/new/EmailSource").text
