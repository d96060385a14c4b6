"""TLS over memory BIOs (protocols/tls_bio.py) against a real TLS server on 127.0.0.1:
the same verification as an SSLSocket, line reading for imaplib, bulk streams, EOF."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from postline import tls
from postline.protocols import net
from postline.protocols.tls_bio import BioContext, BioSocket
from postline.testing.certs import ensure_tls


class EchoServer:
    """TLS server: greets, then answers each line 'SEND n' with n octets, 'BYE' closes."""

    def __init__(self, files) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(files.cert_file, files.key_file)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as s:
                s.sendall(b"* OK hello\r\n")
                f = s.makefile("rb")
                for line in f:
                    if line.startswith(b"SEND "):
                        n = int(line.split()[1])
                        block = bytes(range(256)) * 16
                        while n:   # many small records, as Dovecot sends them
                            part = block[:min(n, 4096)]
                            s.sendall(part)
                            n -= len(part)
                    elif line.startswith(b"BYE"):
                        s.unwrap()
                        return
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return ensure_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(files):
    srv = EchoServer(files)
    yield srv
    srv.close()


def connect(server, files, host="localhost") -> BioSocket:
    ctx = tls.client_context(verify=True, ca_file=str(files.ca_file))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return BioContext(ctx).wrap_socket(raw, server_hostname=host)


def test_lines_and_a_bulk_stream_arrive_whole(server, files):
    s = connect(server, files)
    assert s.version() in ("TLSv1.2", "TLSv1.3") and s.getpeercert(binary_form=True)
    f = s.makefile("rb")
    assert f.readline() == b"* OK hello\r\n"
    s.bulk = True          # reads are coalesced now
    s.sendall(b"SEND 3000000\n")
    buf = bytearray(1 << 20)
    got = bytearray()
    while len(got) < 3_000_000:
        k = s.recv_into(buf)
        assert k
        got += buf[:k]
    assert got == (bytes(range(256)) * 16 * 800)[:3_000_000]
    s.sendall(b"BYE\n")
    assert s.recv_into(buf) == 0   # close_notify: end of stream
    s.close()


def test_host_name_is_verified(server, files):
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server, files, host="wrong.example")


def test_untrusted_server_is_refused(server):
    ctx = tls.client_context(verify=True, ca_file=None)   # system store only
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        BioContext(ctx).wrap_socket(raw, server_hostname="localhost")


def test_wrap_tls_translates_a_bio_handshake_failure(server, files):
    class Ep:
        protocol, host, security, ca_file = "imap", "127.0.0.1", "tls", None
        connect_timeout = read_timeout = 10.0
        allow_insecure_auth, verify_identity = False, True
        effective_port = server.port

    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with pytest.raises(Exception) as info:
        net.wrap_tls(raw, Ep(), bio=True)
    assert "certificate not trusted" in str(info.value)


def test_a_server_that_drops_the_connection_reads_as_end_of_stream(files):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve():
        raw, _ = lsock.accept()
        s = ctx.wrap_socket(raw, server_side=True)
        s.sendall(b"partial")
        s.close()      # no close_notify (that needs unwrap): a ragged end

    threading.Thread(target=serve, daemon=True).start()
    raw = socket.create_connection(lsock.getsockname(), timeout=10)
    s = BioContext(tls.client_context(verify=True, ca_file=str(files.ca_file))).wrap_socket(
        raw, server_hostname="localhost")
    buf = bytearray(100)
    got = b""
    while k := s.recv_into(buf):
        got += bytes(buf[:k])
    assert got == b"partial"
    s.close()
    lsock.close()
