"""What the user reads when TLS fails: one line, the cause, the fix."""

import ssl

import pytest

from postline import tls
from postline.assets.kinds.connection import Incoming
from postline.errors import ConfigError, InsecureAuthRefused
from postline.protocols import net


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    return exc


def test_untrusted_certificate_says_set_ca_file():
    err = tls.translate_ssl_error(_verify_error(19, "self-signed certificate in certificate "
                                                    "chain"), host="mail.test", port=993)
    assert "certificate not trusted" in str(err)
    assert "set ca_file" in str(err)
    assert "\n" not in str(err)


def test_hostname_mismatch_names_both_sides():
    err = tls.translate_ssl_error(_verify_error(62, "Hostname mismatch"), host="mail.test",
                                  port=993, names=["other.test", "10.0.0.1"])
    assert "host name mismatch: certificate is for other.test, 10.0.0.1, not mail.test" in str(err)


def test_plaintext_port_reason_suggests_starttls():
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    exc.reason = "WRONG_VERSION_NUMBER"
    err = tls.translate_ssl_error(exc, host="h", port=143)
    assert "the port seems to speak plaintext" in str(err)
    assert "security: starttls" in str(err)


def test_context_has_tls12_minimum_and_verification():
    ctx = tls.client_context(verify=True)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    loose = tls.client_context(verify=False)
    assert not loose.check_hostname and loose.verify_mode == ssl.CERT_NONE


def test_missing_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ca_file .*missing.pem not found"):
        tls.client_context(verify=True, ca_file=str(tmp_path / "missing.pem"))


def test_garbage_ca_file_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM file"):
        tls.client_context(verify=True, ca_file=str(bad))


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("localhost", True),
                                           ("::1", True), ("127.5.0.1", True),
                                           ("mail.example.com", False), ("10.0.0.1", False)])
def test_loopback(host, expected):
    assert tls.is_loopback(host) is expected


def test_plaintext_credentials_to_remote_host_refused():
    ep = Incoming(protocol="imap", host="mail.example.com", security="none",
                  credential={"type": "secret", "secret": "S.pw"})
    with pytest.raises(InsecureAuthRefused) as info:
        net.check_auth_allowed(ep, encrypted=False, what="password")
    assert "refusing to send the password to mail.example.com:143" in str(info.value)
    assert "allow_insecure_auth: true" in str(info.value)


def test_plaintext_credentials_allowed_when_configured_or_loopback_or_encrypted():
    remote = Incoming(protocol="imap", host="mail.example.com", security="none",
                      allow_insecure_auth=True)
    net.check_auth_allowed(remote, encrypted=False, what="password")
    local = Incoming(protocol="imap", host="127.0.0.1", security="none")
    net.check_auth_allowed(local, encrypted=False, what="password")
    tls_ep = Incoming(protocol="imap", host="mail.example.com", security="tls")
    net.check_auth_allowed(tls_ep, encrypted=True, what="password")


def test_system_store_is_read_from_the_hashed_directory_when_nothing_says_otherwise(
        monkeypatch, tmp_path):
    """Loading the CA bundle file costs 20-40 ms per start; the hashed directory holds the
    same CAs and is read at the handshake. SSL_CERT_FILE / SSL_CERT_DIR are honoured."""
    import os
    import ssl

    import pytest

    from postline import tls

    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    capath = ssl.get_default_verify_paths().capath
    if not capath or not os.path.isdir(capath) or not any(
            n.endswith(".0") for n in os.listdir(capath)):
        pytest.skip("no hashed system CA directory here")
    tls._system_ca_dir.cache_clear()
    tls._context.cache_clear()
    try:
        assert tls._system_ca_dir() == capath
        ctx = tls.client_context(verify=True)
        assert ctx.cert_store_stats()["x509_ca"] == 0      # nothing loaded up front
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))
        tls._system_ca_dir.cache_clear()
        assert tls._system_ca_dir() is None
    finally:
        tls._system_ca_dir.cache_clear()
        tls._context.cache_clear()
