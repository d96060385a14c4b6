"""The HTTP API with FastAPI's TestClient and a scripted sender."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_fakes import MSG, FakeSender, make_project

from postline.service import open_service
from postline.web.app import create_app

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(tmp_path):
    sender = FakeSender()
    project = make_project(tmp_path)
    app = create_app(project, token=TOKEN, open_service=lambda p, n: open_service(
        p, n, sender_factory=lambda: sender, poll_interval=0.05))
    with TestClient(app) as client:
        yield client, sender


def test_health_needs_no_token(api):
    client, _ = api
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_token_required(api, headers):
    client, sender = api
    r = client.post("/api/services/Notify/send", json=MSG, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "token" in r.json()["error"] and sender.attempts == 0


def test_send_returns_200_with_the_result(api):
    client, sender = api
    r = client.post("/api/services/Notify/send", json=MSG, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["server_reply"].startswith("250") and body["message_id"].startswith("<")
    assert body["recipients"][0] == {"address": "ann@example.test", "accepted": True,
                                     "code": 250, "message": "2.1.5 Ok"}


def test_send_and_forget_returns_202(api):
    client, sender = api
    r = client.post("/api/services/Notify/send-and-forget", json=MSG, headers=AUTH)
    assert r.status_code == 202
    assert r.json()["state"] == "queued" and isinstance(r.json()["id"], int)


@pytest.mark.parametrize("msg, field", [
    ({**MSG, "ToList": "b@example.test"}, "To,ToList"),
    ({**MSG, "Subject": "x\r\nBcc: v@example.test"}, "Subject"),
    ({**MSG, "To": [{"Address": "nope"}]}, "To[0].Address"),
    ({**MSG, "Atachments": []}, "Atachments"),
])
def test_invalid_messages_are_422_naming_the_field(api, msg, field):
    client, sender = api
    for path in ("send", "send-and-forget"):
        r = client.post(f"/api/services/Notify/{path}", json=msg, headers=AUTH)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field and r.json()["retriable"] is False
    assert sender.attempts == 0


def test_body_that_is_not_an_object_is_400(api):
    client, _ = api
    r = client.post("/api/services/Notify/send", content=b"[1, 2]", headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "message"


def test_unknown_service_is_404(api):
    client, _ = api
    r = client.post("/api/services/Nope/send", json=MSG, headers=AUTH)
    assert r.status_code == 404 and "Nope" in r.json()["error"]


def test_rejected_is_502_and_transient_503(api):
    client, sender = api
    sender.script = ["5xx"]
    r = client.post("/api/services/Notify/send", json=MSG, headers=AUTH)
    assert r.status_code == 502 and "554 5.7.1" in r.json()["error"]
    assert r.json()["retriable"] is False
    sender.script = ["4xx"] * 3
    r = client.post("/api/services/Notify/send", json=MSG, headers=AUTH)
    assert r.status_code == 503 and r.json()["retriable"] is True
    assert r.headers["retry-after"]


def test_openapi_is_served(api):
    client, _ = api
    spec = client.get("/openapi.json").json()
    assert "/api/services/{name}/send" in spec["paths"]
    assert "/api/services/{name}/send-and-forget" in spec["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("path", ["send", "send-and-forget"])
def test_attachment_file_paths_are_refused_over_http(api, tmp_path, path):
    """A Path attachment would let an API caller mail any file the server can read."""
    client, *_ = api
    secret_file = tmp_path / "private.key"
    secret_file.write_text("KEY-MATERIAL-NEVER-SENT")
    msg = {**MSG, "attachments": [{"fileName": "k.txt", "PATH": str(secret_file)}]}
    r = client.post(f"/api/services/Notify/{path}", json=msg, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == "attachments[0].Path"
    assert "not accepted over HTTP" in body["error"]
    assert "KEY-MATERIAL" not in r.text
