"""OAuth on the local stack: tokens from oidc-provider (HTTP and MSAL) log in to Dovecot and Postfix;
minted HS256 tokens are accepted unless expired, badly signed or from a foreign issuer."""

from __future__ import annotations

import imaplib
import smtplib

import httpx
import msal
import pytest
from stack_helpers import imap_bearer_login, jwt_parts, smtp_bearer_login

from postline.testing.info import MailUser, StackInfo


def test_client_credentials_token_is_an_rs256_jwt_for_the_cc_mailbox(
        mail_stack: StackInfo, cc_token: str) -> None:
    header, claims = jwt_parts(cc_token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"  # not at+jwt: Dovecot 2.3
    assert claims["email"] == mail_stack.cc_mailbox
    assert claims["iss"] == mail_stack.oidc_issuer
    assert claims["exp"] - claims["iat"] == mail_stack.access_token_ttl


def test_client_credentials_token_logs_in_to_imap_and_smtp(mail_stack: StackInfo,
                                                           cc_token: str) -> None:
    imap_bearer_login(mail_stack, mail_stack.cc_mailbox, cc_token, mech="XOAUTH2")
    imap_bearer_login(mail_stack, mail_stack.cc_mailbox, cc_token, mech="OAUTHBEARER", tls=True)
    smtp_bearer_login(mail_stack, mail_stack.cc_mailbox, cc_token)


def test_token_is_refused_for_another_user(mail_stack: StackInfo, cc_token: str,
                                           mailbox_user: MailUser) -> None:
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_bearer_login(mail_stack, mailbox_user.email, cc_token)


def test_token_is_not_a_password(mail_stack: StackInfo, cc_token: str) -> None:
    imap = imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"], timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(mail_stack.cc_mailbox, cc_token)
    imap.logout()


def test_wrong_client_secret_is_refused(mail_stack: StackInfo, oidc_http: httpx.Client,
                                        discovery: dict) -> None:
    resp = oidc_http.post(discovery["token_endpoint"], data={
        "grant_type": "client_credentials", "client_id": mail_stack.cc_client_id,
        "client_secret": "wrong", "scope": " ".join(mail_stack.mail_scopes)})
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_msal_client_credentials_with_local_authority(mail_stack: StackInfo, msal_http) -> None:
    msal_http.verify = str(mail_stack.ca_file)
    app = msal.ConfidentialClientApplication(
        mail_stack.cc_client_id, client_credential=mail_stack.cc_client_secret,
        authority=mail_stack.oidc_authority, instance_discovery=False, http_client=msal_http)
    result = app.acquire_token_for_client(scopes=list(mail_stack.mail_scopes))
    assert "access_token" in result, result.get("error_description")
    smtp_bearer_login(mail_stack, mail_stack.cc_mailbox, result["access_token"])


def test_msal_device_flow_token_carries_the_approving_user(mail_stack: StackInfo,
                                                           mailbox_user: MailUser,
                                                           msal_http) -> None:
    msal_http.verify = str(mail_stack.ca_file)
    app = msal.PublicClientApplication(
        mail_stack.device_client_id, authority=mail_stack.oidc_authority,
        instance_discovery=False, http_client=msal_http)
    flow = app.initiate_device_flow(scopes=list(mail_stack.mail_scopes))
    assert "user_code" in flow, flow
    mail_stack.approve_device(flow["verification_uri_complete"], login=mailbox_user.email)
    result = app.acquire_token_by_device_flow(flow)  # approved already: the first poll succeeds
    assert "access_token" in result, result.get("error_description")
    assert result.get("refresh_token")
    assert jwt_parts(result["access_token"])[1]["email"] == mailbox_user.email
    imap_bearer_login(mail_stack, mailbox_user.email, result["access_token"], tls=True)
    smtp_bearer_login(mail_stack, mailbox_user.email, result["access_token"])
    # refresh without a person: a new access token that works as well
    account = app.get_accounts()[0]
    again = app.acquire_token_silent(list(mail_stack.mail_scopes), account=account,
                                     force_refresh=True)
    assert again and again["access_token"] != result["access_token"]
    imap_bearer_login(mail_stack, mailbox_user.email, again["access_token"])


def test_two_device_approvals_keep_their_users(mail_stack: StackInfo, oidc_http: httpx.Client,
                                               discovery: dict) -> None:
    users = [MailUser.fresh("dev-a"), MailUser.fresh("dev-b")]
    flows = [oidc_http.post(discovery["device_authorization_endpoint"], data={
        "client_id": mail_stack.device_client_id,
        "scope": "openid offline_access " + " ".join(mail_stack.mail_scopes)}).json()
        for _ in users]
    for flow, user in zip(reversed(flows), reversed(users), strict=False):
        mail_stack.approve_device(flow["verification_uri_complete"], login=user.email)
    for flow, user in zip(flows, users, strict=False):
        resp = oidc_http.post(discovery["token_endpoint"], data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": flow["device_code"], "client_id": mail_stack.device_client_id})
        assert resp.status_code == 200, resp.text
        assert jwt_parts(resp.json()["access_token"])[1]["email"] == user.email


def test_unapproved_device_code_is_pending(mail_stack: StackInfo, oidc_http: httpx.Client,
                                           discovery: dict) -> None:
    flow = oidc_http.post(discovery["device_authorization_endpoint"], data={
        "client_id": mail_stack.device_client_id, "scope": "openid"}).json()
    resp = oidc_http.post(discovery["token_endpoint"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": flow["device_code"], "client_id": mail_stack.device_client_id})
    assert resp.json()["error"] == "authorization_pending"


def test_minted_token_is_accepted(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    token = mail_stack.mint_token(mailbox_user.email)
    imap_bearer_login(mail_stack, mailbox_user.email, token)
    imap_bearer_login(mail_stack, mailbox_user.email, token, mech="OAUTHBEARER")
    smtp_bearer_login(mail_stack, mailbox_user.email, token)


@pytest.mark.parametrize("kwargs", [{"expired": True}, {"key": "bad"},
                                    {"issuer": "https://evil.example.test/"}],
                         ids=["expired", "bad-key", "foreign-issuer"])
def test_bad_minted_tokens_are_refused(mail_stack: StackInfo, mailbox_user: MailUser,
                                       kwargs: dict) -> None:
    token = mail_stack.mint_token(mailbox_user.email, **kwargs)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_bearer_login(mail_stack, mailbox_user.email, token)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        smtp_bearer_login(mail_stack, mailbox_user.email, token)
    assert err.value.smtp_code == 535


def test_garbage_token_is_refused(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_bearer_login(mail_stack, mailbox_user.email, "not-a-jwt")
