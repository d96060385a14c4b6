"""What a user reads when the stack refuses: passwords, tokens, certificates, ports."""

from __future__ import annotations

import asyncio
import logging

import pytest
from connhelpers import endpoint_data

from postline.auth.credentials import OAuthLogin, StaticToken
from postline.errors import AuthError, ConnectError, LoginRequired, TLSError, TokenError
from postline.protocols import Envelope, open_reader, open_sender
from postline.protocols.imap import ImapReader
from postline.protocols.pop3 import Pop3Reader
from postline.protocols.smtp import SmtpSender

pytestmark = pytest.mark.stack


def _use(project, protocol, security="tls", credential="secret", **kw):
    stack_user = kw.pop("user")
    direction = "outgoing" if protocol == "smtp" else "incoming"
    project.add({"name": "Box", direction: endpoint_data(
        kw.pop("stack"), protocol=protocol, security=security, credential=credential,
        user=stack_user, **kw)})
    if direction == "outgoing":
        async def go():
            async with open_sender(project, "Box") as s:
                await s.send(Envelope(sender=stack_user, recipients=(stack_user,)), b"x\r\n")
        asyncio.run(go())
    else:
        with open_reader(project, "Box") as r:
            r.list_folders()


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_wrong_password(protocol, project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = "not-the-password"
    with pytest.raises(AuthError) as info:
        _use(project, protocol, stack=mail_stack, user=mailbox_user.email)
    text = str(info.value)
    assert f"login as {mailbox_user.email} at 127.0.0.1:" in text and "failed" in text
    assert "check the user and the password" in text


def _oauth_endpoint(stack, protocol, user):
    from connhelpers import PORT_KEYS

    from postline.assets.kinds.connection import Incoming, Outgoing

    cls = Outgoing if protocol == "smtp" else Incoming
    return cls(protocol=protocol, host=stack.host, port=stack.ports[PORT_KEYS[(protocol, "tls")]],
               security="tls", ca_file=str(stack.ca_file), user=user)


def _oauth_connect(stack, protocol, user, token):
    ep = _oauth_endpoint(stack, protocol, user)
    login = OAuthLogin(user=user, provider=StaticToken(token))
    if protocol == "smtp":
        async def go():
            async with SmtpSender(endpoint=ep, login=login):
                pass
        asyncio.run(go())
    else:
        cls = ImapReader if protocol == "imap" else Pop3Reader
        with cls(endpoint=ep, login=login):
            pass


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_token_for_another_user(protocol, mail_stack, mailbox_user):
    token = mail_stack.mint_token("someone-else@example.test")
    with pytest.raises(TokenError) as info:
        _oauth_connect(mail_stack, protocol, mailbox_user.email, token)
    assert f"rejected the OAuth token for {mailbox_user.email}" in str(info.value)
    assert "for another user" in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_expired_token(protocol, mail_stack, mailbox_user):
    token = mail_stack.mint_token(mailbox_user.email, expired=True)
    with pytest.raises(TokenError) as info:
        _oauth_connect(mail_stack, protocol, mailbox_user.email, token)
    assert "rejected the OAuth token" in str(info.value)
    assert "may be expired" in str(info.value)


class _CountingToken(StaticToken):
    def __init__(self, values):
        super().__init__(values[0])
        self.values, self.calls = list(values), []

    def token(self, *, force_refresh=False):
        self.calls.append(force_refresh)
        return self.values[min(len(self.calls) - 1, len(self.values) - 1)]


def test_rejected_token_is_refreshed_once_then_used(mail_stack, mailbox_user):
    provider = _CountingToken([mail_stack.mint_token(mailbox_user.email, expired=True),
                               mail_stack.mint_token(mailbox_user.email)])
    ep = _oauth_endpoint(mail_stack, "imap", mailbox_user.email)
    with ImapReader(endpoint=ep, login=OAuthLogin(user=mailbox_user.email, provider=provider)):
        pass
    assert provider.calls == [False, True]


def test_untrusted_certificate_with_identity_check(project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    with pytest.raises(TLSError) as info:
        _use(project, "imap", stack=mail_stack, user=mailbox_user.email, ca_file=None)
    assert "certificate not trusted" in str(info.value)
    assert "set ca_file" in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_untrusted_certificate_without_identity_check_warns(protocol, project, mail_stack,
                                                            mailbox_user, caplog):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    caplog.set_level(logging.WARNING, logger="postline.tls")
    _use(project, protocol, security="starttls", stack=mail_stack, user=mailbox_user.email,
         ca_file=None, check_server_identity=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("encrypted but NOT verified" in w for w in warnings)


def test_tls_against_plaintext_port(project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    with pytest.raises(TLSError) as info:
        _use(project, "imap", stack=mail_stack, user=mailbox_user.email,
             port=mail_stack.ports["imap"])
    assert "the port seems to speak plaintext" in str(info.value)
    assert "try security: starttls" in str(info.value)


@pytest.mark.parametrize("protocol,port", [("imap", "imaps"), ("smtp", "smtps")])
def test_plaintext_against_tls_port(protocol, port, project, mail_stack, mailbox_user):
    project.secrets["MailSecrets.password"] = mailbox_user.password
    with pytest.raises(ConnectError) as info:
        _use(project, protocol, security="starttls", stack=mail_stack, user=mailbox_user.email,
             port=mail_stack.ports[port], connect_timeout=1)
    assert "the server seems to expect TLS" in str(info.value)
    assert "use security: tls" in str(info.value)


def test_wrong_client_secret_reports_the_authority_error(project, mail_stack):
    project.secrets["MailSecrets.client_secret"] = "wrong-secret-value"
    with pytest.raises(TokenError) as info:
        _use(project, "imap", credential="oauth_client_credentials", stack=mail_stack,
             user=mail_stack.cc_mailbox)
    assert "invalid_client" in str(info.value)
    assert "wrong-secret-value" not in str(info.value)


def test_unknown_authority_path(project, mail_stack):
    project.secrets["MailSecrets.client_secret"] = mail_stack.cc_client_secret
    authority = f"https://127.0.0.1:{mail_stack.ports['oidc']}/no-such-tenant"
    data = endpoint_data(mail_stack, protocol="imap", security="tls",
                         credential="oauth_client_credentials", user=mail_stack.cc_mailbox)
    data["credential"]["authority"] = authority
    project.add({"name": "Bad", "incoming": data})
    with pytest.raises(TokenError) as info:
        with open_reader(project, "Bad"):
            pass
    assert f"authority {authority} has no OpenID configuration" in str(info.value)
    assert "/no-such-tenant/.well-known/openid-configuration (HTTP 404)" in str(info.value)


def test_device_flow_without_login(project, mail_stack, mailbox_user):
    with pytest.raises(LoginRequired) as info:
        _use(project, "imap", credential="oauth_device_flow", stack=mail_stack,
             user=mailbox_user.email)
    assert "no saved login for connection 'Box'" in str(info.value)
    assert "run 'postline login" in str(info.value) and "Box --direction incoming" \
        in str(info.value)


def test_revoked_refresh_token_asks_for_login_again(project, mail_stack, mailbox_user):
    import json

    from connhelpers import device_login

    from postline.state import token_cache

    project.add({"name": "Box", "incoming": endpoint_data(
        mail_stack, protocol="imap", security="tls", credential="oauth_device_flow",
        user=mailbox_user.email)})
    device_login(project, mail_stack, connection="Box", direction="incoming",
                 user=mailbox_user.email)
    path = token_cache.cache_path(project.state_dir, "Box", "incoming")
    cache = json.loads(token_cache.load(project, path))
    cache["AccessToken"] = {}
    for entry in cache["RefreshToken"].values():
        entry["secret"] = "revoked-refresh-token"
    token_cache.save(project, path, json.dumps(cache))
    with pytest.raises(LoginRequired) as info:
        with open_reader(project, "Box"):
            pass
    text = str(info.value)
    assert "invalid_grant" in text and "expired or was revoked" in text
    assert f"run 'postline login {project.root} Box --direction incoming' again" in text
