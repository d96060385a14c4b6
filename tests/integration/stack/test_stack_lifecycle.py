"""`postline dev-stack` start/status/env/stop on a second stack beside the session's one."""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from postline.cli import main
from postline.testing import install
from postline.testing.errors import StackError, StackUnavailable
from postline.testing.info import StackInfo
from postline.testing.ports import listening_ports, ports_from_base
from postline.testing.stack import Stack


def _try_commands_on_the_demo_project(stack_dir: Path, capsys, monkeypatch) -> None:
    """The README's advice after `make demo`: eval "$(postline dev-stack env)", then try
    commands on the demo project; its sealed password needs the demo's key (issue 13)."""
    import io
    import shlex

    for name in ("POSTLINE_KEY_FILE", "POSTLINE_DEMO_PASSWORD", "DEMO_USER",
                 "POSTLINE_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(stack_dir / "no-config"))
    demo = stack_dir / "demo-project"           # as scripts/demo.sh prepares it
    shutil.copytree(Path(__file__).resolve().parents[3] / "examples" / "local", demo)
    assert main(["keys", "create", str(demo), "--key-file", str(stack_dir / "demo.key")]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-pass"))
    assert main(["secret", "set", str(demo), "DemoSecrets", "password"]) == 0
    capsys.readouterr()
    # without the exported key: where it is looked for and how to point at it
    assert main(["test-connection", str(demo), "LocalMail", "--direction", "incoming"]) == 1
    out, err = capsys.readouterr()
    assert "no private key at " in out + err and "export POSTLINE_KEY_FILE=" in out + err

    assert main(["dev-stack", "env", "--dir", str(stack_dir)]) == 0
    env = capsys.readouterr().out
    assert f"export POSTLINE_KEY_FILE={stack_dir / 'demo.key'}\n" in env
    for line in env.splitlines():               # eval "$(postline dev-stack env)"
        key, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(key, shlex.split(value)[0] if value else "")
    assert main(["test-connection", str(demo), "LocalMail", "--direction", "incoming"]) == 0
    capsys.readouterr()


@pytest.fixture
def stack_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="postline-cli-"))
    os.chmod(path, 0o755)
    yield path / "devstack"
    Stack(dir=path / "devstack").stop()
    shutil.rmtree(path, ignore_errors=True)


def test_start_status_env_stop(mail_stack: StackInfo, stack_dir: Path, capsys,
                               monkeypatch) -> None:
    assert main(["dev-stack", "start", "--dir", str(stack_dir), "--random-ports", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ports = info["ports"]
    assert set(ports) == {"imap", "imaps", "pop3", "pop3s", "lmtp", "smtp", "smtps",
                          "smtp_sink", "oidc", "postgres"}   # issue 16: PostgreSQL too
    assert not set(ports.values()) & set(mail_stack.ports.values())
    assert set(ports.values()) <= listening_ports()

    # idempotent: a second start reports the running stack
    assert main(["dev-stack", "start", "--dir", str(stack_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("already running")
    assert f"127.0.0.1:{ports['imap']}" in out and "alice@example.test / alice-pass" in out
    assert str(stack_dir / "tls" / "ca.pem") in out

    assert main(["dev-stack", "status", "--dir", str(stack_dir)]) == 0
    assert ": running" in capsys.readouterr().out

    assert main(["dev-stack", "env", "--dir", str(stack_dir)]) == 0
    env = capsys.readouterr().out
    assert f"export POSTLINE_STACK_IMAP_PORT={ports['imap']}\n" in env
    assert f"export POSTLINE_STACK_CA_FILE={stack_dir / 'tls' / 'ca.pem'}\n" in env
    assert "export POSTLINE_STACK_OIDC_AUTHORITY=https://127.0.0.1:" in env
    assert "POSTLINE_KEY_FILE" not in env
    _try_commands_on_the_demo_project(stack_dir, capsys, monkeypatch)

    assert main(["dev-stack", "stop", "--dir", str(stack_dir)]) == 0
    assert "stopped" in capsys.readouterr().out
    assert not set(ports.values()) & listening_ports()

    # the session's stack was not touched
    imap = imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"], timeout=10)
    assert imap.login("alice@example.test", "alice-pass")[0] == "OK"
    imap.logout()

    assert main(["dev-stack", "status", "--dir", str(stack_dir)]) == 1
    captured = capsys.readouterr()
    assert "is not running (start it with: postline dev-stack start" in captured.err
    assert main(["dev-stack", "stop", "--dir", str(stack_dir)]) == 0
    assert "nothing running" in capsys.readouterr().out


def test_restart_keeps_ca_and_mail(mail_stack: StackInfo, stack_dir: Path) -> None:
    stack = Stack(dir=stack_dir, access_token_ttl=5)
    first = stack.start()
    ca = first.ca_file.read_bytes()
    first.deliver("keep@example.test", b"Subject: keep\r\n\r\nkept\r\n")
    assert stack.stop() is True
    second = stack.start()
    assert second.ca_file.read_bytes() == ca
    imap = imaplib.IMAP4_SSL(second.host, second.ports["imaps"], ssl_context=second.ssl_context())
    imap.login("keep@example.test", "keep-pass")
    assert imap.select("INBOX")[1] == [b"1"]
    imap.logout()


def test_short_token_lifetime(mail_stack: StackInfo, stack_dir: Path) -> None:
    import httpx

    info = Stack(dir=stack_dir, access_token_ttl=5).start()
    with httpx.Client(verify=info.ssl_context(), trust_env=False) as client:
        resp = client.post(f"{info.oidc_issuer}/token", data={
            "grant_type": "client_credentials", "client_id": info.cc_client_id,
            "client_secret": info.cc_client_secret, "scope": " ".join(info.mail_scopes)})
    assert resp.json()["expires_in"] == 5


def test_busy_port_is_named(mail_stack: StackInfo, stack_dir: Path) -> None:
    ports = dict(mail_stack.ports)  # all taken by the session's stack
    with pytest.raises(StackError, match=r"port \d+ \(imap\) on 127.0.0.1 is already in use"):
        Stack(dir=stack_dir, ports=ports).start()
    assert Stack(dir=stack_dir).status().anything_running is False


def test_a_server_that_dies_is_reported_and_the_rest_stopped(mail_stack: StackInfo,
                                                            stack_dir: Path, monkeypatch) -> None:
    from postline.testing import procs, servers

    def broken_start(self) -> None:
        procs.spawn(["sh", "-c", f"echo 'Error: simulated crash'; exit 3 # {self.marker}"],
                    log_file=self.log_file, pid_file=self.pid_file)

    monkeypatch.setattr(servers.OidcServer, "start", broken_start)
    stack = Stack(dir=stack_dir)
    with pytest.raises(StackError, match=r"^oidc exited during start: Error: simulated crash "
                                         r"\(log: .*oidc.log\)$"):
        stack.start()
    assert not stack.status().anything_running
    assert not set(StackInfo.load(stack_dir).ports.values()) & listening_ports()


def test_dir_that_nobody_cannot_enter_is_refused(mail_stack: StackInfo) -> None:
    parent = Path(tempfile.mkdtemp(prefix="postline-private-"))  # mode 0700
    try:
        with pytest.raises(StackError, match=f"cannot enter {parent}; .*chmod o\\+x {parent}"):
            Stack(dir=parent / "stack").start()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_missing_package_is_named_with_the_fix(monkeypatch, capsys, tmp_path) -> None:
    fake = install.Requirement(path=str(tmp_path / "no-such-binary"), package="dovecot-imapd",
                               purpose="IMAP server")
    monkeypatch.setattr(install, "REQUIREMENTS", (fake,))
    assert main(["dev-stack", "start", "--dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "dovecot-imapd" in err and "scripts/bootstrap.sh" in err
    with pytest.raises(StackUnavailable):
        Stack(dir=tmp_path / "s").start()


def test_fixed_ports_from_a_base() -> None:
    assert ports_from_base(10000) == {
        "imap": 10143, "imaps": 10993, "pop3": 10110, "pop3s": 10995, "lmtp": 10024,
        "smtp": 10587, "smtps": 10465, "smtp_sink": 10028, "oidc": 18443,
        "postgres": 15432}
    with pytest.raises(ValueError, match="out of range"):
        ports_from_base(60000)


def test_install_is_a_fast_no_op_when_present(capsys) -> None:
    cache = install.default_cache_dir(os.environ)
    if not install.installed_oidc_version(cache):
        pytest.skip("oidc-provider not installed in the cache")
    assert main(["dev-stack", "install", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
