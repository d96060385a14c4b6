"""Token providers: refresh ahead of expiry, forced refresh, authority discovery (no network)."""

import time

import pytest

from postline.auth import oauth
from postline.errors import TokenError


class _Counting(oauth._BaseProvider):
    def __init__(self, lifetimes):
        super().__init__(authority="https://id.example.test/t", client_id="c", scopes=["s"],
                         ca_file=None, verify=True, timeout=5)
        self.lifetimes = list(lifetimes)
        self.fetches = 0

    def _fetch(self, force_refresh):
        self.fetches += 1
        return {"access_token": f"token-number-{self.fetches}",
                "expires_in": self.lifetimes[self.fetches - 1]}


def test_token_is_reused_until_five_minutes_before_expiry():
    p = _Counting([3600, 3600])
    assert p.token() == p.token() == "token-number-1"
    assert p.fetches == 1
    p._expires = time.time() + 299  # inside the refresh-ahead window
    assert p.token() == "token-number-2"


def test_forced_refresh_fetches_a_new_token():
    p = _Counting([3600, 3600])
    p.token()
    assert p.token(force_refresh=True) == "token-number-2"


def test_reserved_scopes_are_left_to_msal():
    p = _Counting([1])
    assert oauth._scopes(["openid", "offline_access", "Mail.Read"]) == ["Mail.Read"]
    assert p.scopes == ["s"]


class _Resp:
    def __init__(self, status, body=None):
        self.status_code, self._body = status, body

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


class _Session:
    def __init__(self, answers):
        self.answers, self.urls = answers, []

    def get(self, url, timeout):
        self.urls.append(url)
        return self.answers.get(url, _Resp(404))


def test_discover_generic_oidc():
    s = _Session({"https://id.example.test/realms/x/.well-known/openid-configuration":
                  _Resp(200, {"token_endpoint": "https://id.example.test/token"})})
    assert oauth.discover("https://id.example.test/realms/x/", s, 5) == {
        "oidc_authority": "https://id.example.test/realms/x"}


def test_discover_entra_style_tenant():
    s = _Session({"https://id.example.test/tenant/v2.0/.well-known/openid-configuration":
                  _Resp(200, {"token_endpoint": "https://id.example.test/token"})})
    assert oauth.discover("https://id.example.test/tenant", s, 5) == {
        "authority": "https://id.example.test/tenant", "instance_discovery": False}


def test_microsoft_authority_needs_no_discovery():
    s = _Session({})
    assert oauth.discover("https://login.microsoftonline.com/contoso", s, 5) == {
        "authority": "https://login.microsoftonline.com/contoso"}
    assert s.urls == []


def test_discover_failure_lists_what_was_tried():
    with pytest.raises(TokenError) as info:
        oauth.discover("https://id.example.test/nope", _Session({}), 5)
    assert "has no OpenID configuration" in str(info.value)
    assert "/nope/.well-known/openid-configuration (HTTP 404)" in str(info.value)
    assert "/nope/v2.0/.well-known/openid-configuration (HTTP 404)" in str(info.value)


def test_http_authority_refused():
    with pytest.raises(TokenError, match="must be an https:// URL"):
        oauth.discover("http://id.example.test/x", _Session({}), 5)
