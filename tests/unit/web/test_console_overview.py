"""The console as a new user meets it (issue 13): an unknown URL gets a console page, the
overview links sources to ledgers and services to outboxes with usage counts, and pages
fit a phone-width window (checked on the HTML and CSS: no browser on this machine)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from test_console import AUTH, PASSWORD, PROJECT, TOKEN

from postline.project import open_project
from postline.web.app import create_app


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSOLE_TEST_PASSWORD", PASSWORD)
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    (tmp_path / "assets.yaml").write_text(PROJECT)
    with TestClient(create_app(open_project(tmp_path), token=TOKEN),
                    follow_redirects=False) as c:
        yield c


@pytest.mark.parametrize("path", ["/nope", "/assets", "/sources/", "/favicon.ico"])
def test_an_unknown_url_gets_a_console_page(client, path):
    for headers in (AUTH, {}):
        r = client.get(path, headers=headers)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert "<h1>Not found</h1>" in r.text
        assert f"There is no page <code>{path}</code>" in r.text
        assert "<a href='/'>Back to the project</a>" in r.text
    # the log-out button only for a logged-in user
    assert "/logout" in client.get(path, headers=AUTH).text
    assert "/logout" not in client.get(path).text


def test_an_unknown_url_escapes_what_it_shows(client):
    r = client.get("/<script>x</script>", headers=AUTH)
    assert r.status_code == 404 and "<script>" not in r.text


@pytest.mark.parametrize("path", ["/api/nope", "/api/services/Notify"])
def test_api_paths_keep_their_json(client, path):
    r = client.get(path, headers=AUTH)
    assert r.status_code in (404, 405)
    assert r.headers["content-type"] == "application/json"
    assert "detail" in r.json()


def _row(html: str, name: str) -> str:
    return next(row for row in re.findall(r"<tr>.*?</tr>", html)
                if f">{name}</a>" in row)


def test_the_overview_links_sources_to_ledgers_and_services_to_outboxes(client):
    html = client.get("/", headers=AUTH).text
    assert "<th>Used by</th>" in html
    inbox, notify = _row(html, "Inbox"), _row(html, "Notify")
    assert '<a href="/sources/Inbox">ledger</a>' in inbox
    assert '<a href="/services/Notify">outbox</a>' in notify
    assert "/sources/" not in _row(html, "Mail") and "/services/" not in _row(html, "Mail")
    # used by: the same counts as `postline assets`
    cells = lambda row: re.findall(r"<td>(.*?)</td>", row)  # noqa: E731
    assert cells(_row(html, "Mail"))[2] == "2"      # Inbox, Notify
    assert cells(_row(html, "Creds"))[2] == "1"     # Mail (twice, counted once)
    assert cells(inbox)[2] == "1" and cells(notify)[2] == "1"   # Flow
    assert cells(_row(html, "Flow"))[2] == "0"


def test_pages_fit_a_phone_width_window(client):
    for path in ("/", "/assets/EmailConnection/Mail", "/sources/Inbox", "/services/Notify",
                 "/nope"):
        html = client.get(path, headers=AUTH).text
        assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in html
        # every table scrolls in its own box, so the page itself never gets wider than the
        # window
        assert html.count("<table>") == html.count('<div class="wide"><table>')
    css = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert ".wide{overflow-x:auto;max-width:100%}" in css
    assert "@media (max-width:640px){" in css
    assert "pre{white-space:pre-wrap;overflow-wrap:anywhere}" in css
    assert "max-width:100%;box-sizing:border-box" in css   # the login field


def test_the_asset_page_shows_yaml_key_names(client):
    html = client.get("/assets/EmailSource/Inbox", headers=AUTH).text
    assert "\nfilters: (default)\n  from: (default)\n" in html
    assert "from_" not in html
    assert "  max_streams: null (default: no limit)\n" in html
