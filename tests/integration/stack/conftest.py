"""Fixtures of the stack's smoke tests: an HTTP client for the local OAuth server, tokens."""

from __future__ import annotations

import httpx
import pytest

from postline.testing.info import StackInfo


@pytest.fixture(scope="session")
def oidc_http(mail_stack: StackInfo):
    """An httpx client that trusts only the stack's CA (and ignores proxy/CA env variables)."""
    with httpx.Client(verify=mail_stack.ssl_context(), trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def discovery(mail_stack: StackInfo, oidc_http: httpx.Client) -> dict:
    resp = oidc_http.get(f"{mail_stack.oidc_issuer}/.well-known/openid-configuration")
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture
def cc_token(mail_stack: StackInfo, oidc_http: httpx.Client, discovery: dict) -> str:
    """A client-credentials access token from the local oidc-provider (plain HTTP, no MSAL)."""
    resp = oidc_http.post(discovery["token_endpoint"], data={
        "grant_type": "client_credentials", "client_id": mail_stack.cc_client_id,
        "client_secret": mail_stack.cc_client_secret, "scope": " ".join(mail_stack.mail_scopes)})
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


@pytest.fixture
def msal_http():
    """A requests session for MSAL that trusts the environment's CA bundle variables not at all."""
    import requests

    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()
