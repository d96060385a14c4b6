"""Sessions, the failed-login back-off, body limits and offline API docs of ``postline serve``,
through HTTP requests to the app (FastAPI's TestClient) with a clock the test moves."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from postline.project import open_project
from postline.web.app import create_app
from postline.web.guard import ServeLimits

TOKEN = "guard-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROJECT = """\
kind: EmailConnection
name: Out
outgoing: {protocol: smtp, host: 127.0.0.1, port: 9, security: none}
---
kind: EmailService
name: Notify
connection: Out
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(tmp_path, monkeypatch, clock):
    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    (tmp_path / "assets.yaml").write_text(PROJECT)
    limits = ServeLimits(max_body=4096, session_idle=60, session_max=300, failures_allowed=3,
                         failure_window=600, max_lockout=20)
    app = create_app(open_project(tmp_path), token=TOKEN, limits=limits, clock=clock)
    with TestClient(app, follow_redirects=False) as c:
        yield c


def login(client) -> str:
    r = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert r.status_code == 303
    return client.cookies["postline_session"]


def test_every_login_gets_a_new_random_session_id(client):
    first = login(client)
    client.cookies.clear()
    second = login(client)
    assert first != second and len(first) >= 43 and TOKEN not in first


def test_a_copied_cookie_is_dead_after_logout(client):
    sid = login(client)
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code == 303
    client.cookies.set("postline_session", sid)       # the copy an attacker kept
    r = client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"


def test_a_session_ends_when_idle_and_at_its_absolute_limit(client, clock):
    login(client)
    clock.now += 59
    assert client.get("/").status_code == 200          # used: the idle time starts again
    clock.now += 61
    assert client.get("/").status_code == 303          # 61 s unused: over the 60 s idle limit
    login(client)
    for _ in range(6):                                 # used every 50 s ...
        clock.now += 50
        assert client.get("/").status_code == 200
    clock.now += 1                                     # ... but 301 s after login: ended
    assert client.get("/").status_code == 303


def test_the_cookie_says_how_long_it_may_live(client):
    r = client.post("/login", data={"token": TOKEN})
    cookie = r.headers["set-cookie"].lower()
    assert "max-age=300" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_failed_logins_lock_the_address_out_for_a_doubling_time(client, clock, caplog):
    caplog.set_level(logging.WARNING, "postline.web")
    for _ in range(2):
        assert client.post("/login", data={"token": "guess-aaaaaaaaaaaa"}).status_code == 401
    r = client.post("/login", data={"token": "guess-aaaaaaaaaaaa"})
    assert r.status_code == 401                        # the third: locked for 1 s from now on
    r = client.post("/login", data={"token": TOKEN})   # even the right token waits
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "Too many failed logins from testclient; try again in 1s." in r.text
    clock.now += 1
    assert client.post("/login", data={"token": "guess-b"}).status_code == 401
    r = client.post("/login", data={"token": TOKEN})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    clock.now += 2
    assert client.post("/login", data={"token": TOKEN}).status_code == 303   # and forgotten
    assert client.post("/login", data={"token": "guess-c"}).status_code == 401
    lines = [r.getMessage() for r in caplog.records]
    assert any("failed console login from testclient (3 failure(s) in a row; locked out "
               "for 1s)" in line for line in lines)
    assert not any("guess" in line or TOKEN in line for line in lines)


def test_the_lock_out_is_capped_and_the_api_shares_it(client, clock):
    bad = {"Authorization": "Bearer guess-xxxxxxxxxxxx"}
    waits = []
    for _ in range(14):
        r = client.post("/api/services/Notify/send", json={}, headers=bad)
        if r.status_code == 429:
            waits.append(int(r.headers["retry-after"]))
            clock.now += waits[-1]
    assert waits == [1, 2, 4, 8, 16, 20]              # doubling, capped at max_lockout
    assert client.post("/api/services/Notify/send", json={}, headers=bad).status_code == 401
    r = client.post("/login", data={"token": TOKEN})   # one counter per address
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 20


def test_a_missing_token_is_not_counted_as_a_guess(client):
    for _ in range(10):
        assert client.post("/api/services/Notify/send", json={}).status_code == 401


def test_bodies_over_the_limit_are_413_in_the_api_shape(client):
    r = client.post("/api/services/Notify/send", content=b"{" + b" " * 5000 + b"}",
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "the request body is over the limit of 4 KiB", "field": "message",
                        "retriable": False, "outcome": None, "code": None,
                        "type": "ContentTooLarge"}

    def chunks():
        for _ in range(10):
            yield b" " * 1000
    r = client.post("/api/services/Notify/send", content=chunks(),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/login", content=b"token=" + b"x" * 20000,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and "16 KiB" in r.json()["error"]


EXTERNAL = re.compile(r"""(?:src|href|action|url)\s*[=:(]\s*["']?\s*(?:https?:)?//""", re.I)


def test_no_page_loads_anything_from_another_host(client):
    login(client)
    pages = ["/docs", "/redoc", "/login", "/", "/assets/EmailService/Notify",
             "/services/Notify", "/docs/oauth2-redirect"]
    for page in pages:
        r = client.get(page)
        assert r.status_code == 200, page
        assert not EXTERNAL.search(r.text), (page, EXTERNAL.search(r.text))
    docs = client.get("/docs").text
    assert '"validatorUrl": null' in docs      # Swagger UI would send the URL to a public one
    assets = re.findall(r"""(?:src|href)=["']?(/[^"' >]+)""", docs + client.get("/redoc").text)
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css",
            "/docs-assets/redoc.standalone.js"} <= set(assets)
    for path in assets:
        r = client.get(path)
        assert r.status_code == 200 and len(r.content) > 100, path
