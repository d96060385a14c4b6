"""The HTTP API on a real uvicorn (random port) and the CLI, against a real SMTP server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pytest
from svc_helpers import write_project

from postline.testing.ports import port_open, wait_until
from postline.testing.smtp_faults import FaultyServer

TOKEN = "integration-token-0123456789"
MSG = {"From": "app@example.test", "To": [{"Address": "ann@example.test"}], "Subject": "api",
       "Body": "<p>hello</p>"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    with FaultyServer(mode="accept") as server:
        yield server


@pytest.fixture
def served(tmp_path, smtp):
    root = write_project(tmp_path / "proj", host="127.0.0.1", port=smtp.port)
    port = free_port()
    env = {**os.environ, "POSTLINE_API_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "postline", "serve", str(root), "--port",
                             str(port)], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: proc.poll() is not None or port_open(port), timeout=20) \
            or proc.poll() is not None:
        raise AssertionError(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")
    yield base
    proc.terminate()
    proc.wait(10)


def test_api_over_real_http(served, smtp):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{served}/api/services/Notify"
    assert httpx.post(f"{url}/send", json=MSG).status_code == 401
    assert httpx.post(f"{url}/send", json=MSG, headers={"Authorization": "Bearer nope"}
                      ).status_code == 401
    r = httpx.post(f"{url}/send", json={**MSG, "ToList": "x@example.test"}, headers=auth)
    assert r.status_code == 422 and r.json()["field"] == "To,ToList"
    r = httpx.post(f"{url}/send", json=MSG, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["server_reply"].startswith("250")
    r = httpx.post(f"{url}/send-and-forget", json=MSG, headers=auth)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    assert wait_until(lambda: len(smtp.received) == 2, timeout=10), "queued mail not delivered"
    assert httpx.get(f"{served}/openapi.json").json()["info"]["title"] == "postline"


def test_serve_refuses_to_start_without_token(tmp_path, smtp):
    root = write_project(tmp_path / "proj", host="127.0.0.1", port=smtp.port)
    env = {k: v for k, v in os.environ.items() if k != "POSTLINE_API_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "postline", "serve", str(root)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "POSTLINE_API_TOKEN" in out.stderr


def test_cli_send_outbox_list_and_retry(tmp_path):
    with FaultyServer(mode="reject") as server:
        root = write_project(tmp_path / "proj", host="127.0.0.1", port=server.port)
        (tmp_path / "mail.json").write_text(json.dumps(MSG))

        def cli(*args, stdin=None):
            return subprocess.run([sys.executable, "-m", "postline", *args], input=stdin,
                                  capture_output=True, text=True, timeout=60)

        out = cli("send", str(root), "Notify", "--message", str(tmp_path / "mail.json"))
        assert out.returncode == 1 and "554 5.7.1" in out.stderr
        out = cli("send", str(root), "Notify", "--message", "-", "--forget", "--json",
                  stdin=json.dumps(MSG))
        assert out.returncode == 0 and json.loads(out.stdout.splitlines()[0])["state"] == "queued"
        out = cli("outbox", "list", str(root), "Notify", "--state", "failed", "--json")
        [entry] = json.loads(out.stdout)
        assert "554 5.7.1" in entry["reason"]
        server.mode = "accept"
        out = cli("outbox", "retry", str(root), "Notify", "--all-failed")
        assert out.returncode == 0 and "queued 1 mail(s) again" in out.stdout
        assert "sent: 1" in out.stdout and len(server.received) == 1
        out = cli("send", str(root), "Notify", "--message", "-", stdin='{"From": "a@example.test"}')
        assert out.returncode == 1 and "no recipient" in out.stderr
        out = cli("send", str(root), "Nofity", "--message", str(tmp_path / "mail.json"))
        assert out.returncode == 1 and "Notify" in out.stderr
