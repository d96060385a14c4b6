"""``postline serve`` against hostile clients, over raw sockets to a real uvicorn subprocess:
bodies are refused before they are read, capped while they arrive, memory stays bounded,
repeated bad tokens are slowed down and logged, TLS and the warning without it."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from svc_helpers import write_project

from postline.testing.certs import issue_cert, make_ca
from postline.testing.ports import port_open, wait_until

TOKEN = "hardening-token-0123456789"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """A ``postline serve`` subprocess; its stderr goes to a file (a pipe could fill up)."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.root = write_project(tmp_path / "proj", host="127.0.0.1", port=9)  # never sends
        self.port = free_port()
        self.log = tmp_path / "serve.log"
        env = {**os.environ, "POSTLINE_API_TOKEN": TOKEN}
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "postline", "serve", str(self.root), "--port",
                 str(self.port), *args], env=env, stderr=err)

    def wait_ready(self) -> Serve:
        if not wait_until(lambda: self.proc.poll() is not None or port_open(self.port),
                          timeout=20) or self.proc.poll() is not None:
            raise AssertionError(f"serve did not start: {self.stderr()}")
        return self

    def stderr(self) -> str:
        return self.log.read_text()

    def rss(self) -> int:
        """Resident memory of the server process in bytes (from /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def serve(tmp_path):
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        s = Serve(tmp_path / f"s{len(started)}", *args).wait_ready()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def head(path: str, *, length: int | None = None, chunked: bool = False,
         token: str | None = None, ctype: str = "application/json") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {ctype}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and whatever body came before the server closed."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    head_, _, body = data.partition(b"\r\n\r\n")
    lines = head_.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                   (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def test_unauthenticated_200_mb_post_is_answered_401_before_a_byte_of_body(serve):
    s = serve()
    for path in ("/api/services/Notify/send", "/api/services/Notify/send-and-forget"):
        for token in (None, "wrong-token-xxxxxxxx"):
            with connect(s.port) as sock:
                sock.sendall(head(path, length=200 * MIB, token=token))   # no body sent at all
                status, headers, body = read_response(sock)
            assert status == 401 and headers["connection"] == "close"
            assert b"earer" in body and b"wrong-token" not in body


def test_content_length_over_the_limit_is_413_before_reading(serve):
    s = serve("--max-body-mb", "1")
    with connect(s.port) as sock:
        sock.sendall(head("/api/services/Notify/send", length=2 * MIB, token=TOKEN))
        status, headers, body = read_response(sock)
    assert status == 413 and headers["connection"] == "close"
    assert b"over the limit of 1 MiB" in body
    with connect(s.port) as sock:   # the login form is small: 16 KiB
        sock.sendall(head("/login", length=200 * MIB,
                          ctype="application/x-www-form-urlencoded"))
        status, _, body = read_response(sock)
    assert status == 413 and b"16 KiB" in body


def send_chunked(port: int, path: str, total: int, *, token: str | None = TOKEN) -> int:
    """POST ``total`` bytes chunked (64 KiB chunks) until the server answers; its status."""
    chunk = b"x" * 65536
    with connect(port) as sock:
        sock.sendall(head(path, chunked=True, token=token))
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break      # the server answered early
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        status, _, _ = read_response(sock)
    assert sent < total, "the server read the whole body"
    return status


def test_a_chunked_body_is_cut_at_the_limit(serve):
    s = serve("--max-body-mb", "1")
    assert send_chunked(s.port, "/api/services/Notify/send", 64 * MIB) == 413


def _unauth_flood(port: int, size: int) -> None:
    with connect(port) as sock:
        sock.settimeout(5)
        try:
            sock.sendall(head("/api/services/Notify/send", length=size))
            sock.sendall(b"{" + b" " * (size - 1))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass


def test_memory_stays_bounded_under_big_posts(serve):
    s = serve("--max-body-mb", "1")
    send_chunked(s.port, "/api/services/Notify/send", 32 * MIB)     # warm up: imports, pools
    _unauth_flood(s.port, 4 * MIB)
    before = s.rss()
    threads = [threading.Thread(target=_unauth_flood, args=(s.port, 50 * MIB))
               for _ in range(6)]
    threads += [threading.Thread(target=send_chunked,
                                 args=(s.port, "/api/services/Notify/send", 50 * MIB))
                for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = s.rss()
    # twelve 50 MB bodies: read into memory they would be 600 MB
    assert after - before < 40 * MIB, (before, after)
    assert httpx.get(f"http://127.0.0.1:{s.port}/api/health").status_code == 200


def test_repeated_bad_tokens_get_429_and_are_logged_without_the_token(serve):
    s = serve()
    url = f"http://127.0.0.1:{s.port}/api/services/Notify/send"
    statuses = [httpx.post(url, json={}, headers={"Authorization": f"Bearer guess-{i:020d}"}
                           ).status_code for i in range(7)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]
    r = httpx.post(url, json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "too many failed logins from 127.0.0.1" in r.json()["error"]
    log = s.stderr()
    assert "bad bearer token for POST /api/services/Notify/send from 127.0.0.1" in log
    assert "locked out for" in log and "guess-" not in log and TOKEN not in log


def test_console_session_ends_at_logout_over_http(serve):
    s = serve()
    base = f"http://127.0.0.1:{s.port}"
    with httpx.Client(base_url=base, follow_redirects=False) as c:
        assert c.post("/login", data={"token": TOKEN}).status_code == 303
        cookie = c.cookies["postline_session"]
        assert len(cookie) >= 43 and TOKEN not in cookie
        assert c.get("/").status_code == 200
        assert c.post("/logout").status_code == 303
    copied = httpx.get(f"{base}/", cookies={"postline_session": cookie},
                       follow_redirects=False)
    assert copied.status_code == 303 and copied.headers["location"].startswith("/login")


def test_tls_with_a_throwaway_certificate(serve, tmp_path):
    tls = tmp_path / "tls"
    make_ca(ca_file=tls / "ca.pem", ca_key_file=tls / "ca.key")
    issue_cert(ca_file=tls / "ca.pem", ca_key_file=tls / "ca.key", names=["127.0.0.1"],
               cert_file=tls / "cert.pem", key_file=tls / "key.pem")
    s = serve("--tls-cert", str(tls / "cert.pem"), "--tls-key", str(tls / "key.pem"))
    r = httpx.get(f"https://127.0.0.1:{s.port}/api/health", verify=str(tls / "ca.pem"))
    assert r.status_code == 200
    assert f"on https://127.0.0.1:{s.port}/" in s.stderr() and "warning" not in s.stderr()
    with httpx.Client(base_url=f"https://127.0.0.1:{s.port}", verify=str(tls / "ca.pem"),
                      follow_redirects=False) as c:
        r = c.post("/login", data={"token": TOKEN})
        assert "secure" in r.headers["set-cookie"].lower()


def run_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    root = write_project(tmp_path / "proj", host="127.0.0.1", port=9)
    return subprocess.run([sys.executable, "-m", "postline", "serve", str(root), *args],
                          env={**os.environ, "POSTLINE_API_TOKEN": TOKEN},
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, says", [
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
     "cannot read /nonexistent/cert.pem: No such file or directory"),
    (["--tls-cert", "BADFILE", "--tls-key", "BADFILE"], "not a certificate and its private key"),
    (["--max-body-mb", "0"], "--max-body-mb must be more than 0"),
])
def test_bad_serve_options_are_one_line(tmp_path, args, says):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    out = run_serve(tmp_path, *[str(bad) if a == "BADFILE" else a for a in args])
    assert out.returncode == 1 and says in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2


def test_warning_when_listening_beyond_loopback_without_tls(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no interface: the warning comes before the bind fails,
    # so nothing ever listens on a real network
    out = run_serve(tmp_path, "--host", "192.0.2.1", "--port", str(free_port()))
    assert "warning: serving on 192.0.2.1 without TLS" in out.stderr
    assert "--tls-cert/--tls-key" in out.stderr


def test_a_local_proxy_s_forwarded_headers_are_trusted(serve):
    s = serve()
    base = f"http://127.0.0.1:{s.port}"
    fwd = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    r = httpx.post(f"{base}/api/services/Notify/send", json={},
                   headers={**fwd, "Authorization": "Bearer guess-0000000000"})
    assert r.status_code == 401
    assert "bad bearer token for POST /api/services/Notify/send from 203.0.113.9" in s.stderr()
    r = httpx.post(f"{base}/login", data={"token": TOKEN}, headers=fwd)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
