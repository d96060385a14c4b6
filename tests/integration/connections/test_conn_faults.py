"""Failures a user meets before authentication, against tiny misbehaving servers.

These need no mail stack: each server is a postline.testing.faults server on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from connhelpers import incoming, outgoing

from postline import tls
from postline.auth.credentials import PasswordLogin
from postline.errors import (
    ConnectError,
    ConnectTimeout,
    InsecureAuthRefused,
    StartTLSUnavailable,
    TLSError,
)
from postline.protocols.imap import ImapReader
from postline.protocols.pop3 import Pop3Reader
from postline.protocols.smtp import SmtpSender
from postline.testing.faults import FaultServer, drops_mid_command, no_starttls, silent

LOGIN = PasswordLogin(user="bob@example.test", password="bob-secret-pw")


def _reader(protocol: str, **kw):
    ep = incoming(protocol=protocol, **kw)
    cls = ImapReader if protocol == "imap" else Pop3Reader
    return cls(endpoint=ep, login=LOGIN)


def _connect(protocol: str, **kw) -> None:
    if protocol == "smtp":
        async def go():
            sender = SmtpSender(endpoint=outgoing(**kw), login=LOGIN)
            try:
                await sender.connect()
            finally:
                await sender.close()
        asyncio.run(go())
    else:
        with _reader(protocol, **kw):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_starttls_required_but_not_offered(protocol):
    with FaultServer(no_starttls(protocol)) as srv:
        with pytest.raises(StartTLSUnavailable) as info:
            _connect(protocol, port=srv.port, security="starttls")
    assert "does not offer STARTTLS" in str(info.value)
    assert "refusing to continue in plaintext" in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_server_drops_connection_mid_command(protocol):
    with FaultServer(drops_mid_command(protocol)) as srv:
        with pytest.raises(ConnectError) as info:
            _connect(protocol, port=srv.port, security="none")
    text = str(info.value)
    assert f"127.0.0.1:{srv.port}" in text
    assert "closed" in text or "lost the connection" in text


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_silent_server_plaintext_means_tls_port(protocol):
    with FaultServer(silent()) as srv:
        with pytest.raises(ConnectTimeout) as info:
            _connect(protocol, port=srv.port, security="none", connect_timeout=0.5)
    assert "no greeting" in str(info.value)
    assert "the server seems to expect TLS" in str(info.value)
    assert "use security: tls" in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "smtp"])
def test_silent_server_with_tls_times_out_in_handshake(protocol):
    with FaultServer(silent()) as srv:
        with pytest.raises(ConnectError) as info:
            _connect(protocol, port=srv.port, security="tls", connect_timeout=0.5)
    assert "timed out" in str(info.value) or "did not answer" in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_connection_refused(protocol):
    port = _free_port()
    with pytest.raises(ConnectError) as info:
        _connect(protocol, port=port, security="none")
    assert f"connection to 127.0.0.1:{port} refused: nothing is listening there" \
        in str(info.value)


def test_unknown_host_name():
    with pytest.raises(ConnectError, match="cannot resolve host name 'no-such-host.invalid'"):
        _connect("imap", host="no-such-host.invalid", port=993, security="tls")


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_host_name_mismatch(protocol, local_ca):
    ctx = local_ca.server_context(["mail.other.test"])
    with FaultServer(no_starttls(protocol), tls=ctx) as srv:
        with pytest.raises(TLSError) as info:
            _connect(protocol, port=srv.port, security="tls", ca_file=str(local_ca.ca_file))
    assert "host name mismatch: certificate is for mail.other.test, not 127.0.0.1" \
        in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_untrusted_certificate(protocol, local_ca):
    ctx = local_ca.server_context(["127.0.0.1"])
    with FaultServer(no_starttls(protocol), tls=ctx) as srv:
        with pytest.raises(TLSError) as info:
            _connect(protocol, port=srv.port, security="tls")
    assert "certificate not trusted" in str(info.value)
    assert "set ca_file" in str(info.value)


def test_unverified_tls_connects_with_a_warning(local_ca, caplog):
    ctx = local_ca.server_context(["mail.other.test"])
    with FaultServer(no_starttls("pop3"), tls=ctx) as srv:
        caplog.set_level(logging.WARNING, logger="postline.tls")
        reader = Pop3Reader(endpoint=incoming(protocol="pop3", port=srv.port, security="tls",
                                              check_server_identity=False), login=None)
        with reader:
            assert reader.tls_info["verified"] is False
    assert any("NOT verified" in r.getMessage() for r in caplog.records)


def test_tls_against_plaintext_server(local_ca):
    with FaultServer(no_starttls("imap")) as srv:
        with pytest.raises(TLSError) as info:
            _connect("imap", port=srv.port, security="tls")
    assert "the port seems to speak plaintext" in str(info.value)


def test_plaintext_password_to_remote_host_refused(monkeypatch):
    monkeypatch.setattr(tls, "is_loopback", lambda host: False)
    with FaultServer(no_starttls("imap")) as srv:
        with pytest.raises(InsecureAuthRefused) as info:
            _connect("imap", port=srv.port, security="none")
    assert "over an unencrypted connection" in str(info.value)
    assert "allow_insecure_auth: true" in str(info.value)
