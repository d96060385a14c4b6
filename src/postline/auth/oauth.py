"""OAuth token providers: client credentials and device flow, both through MSAL.

Why MSAL for every authority: it implements both grants, refresh, and a serializable cache,
and speaks to Microsoft Entra (``authority=``) and to any OpenID Connect provider
(``oidc_authority=``: Google, Keycloak, Auth0, the dev stack's oidc-provider), so there is
one code path to test. Which of the two is chosen by :func:`discover`:
Microsoft's login hosts use ``authority=``; for any other host we read
``{authority}/.well-known/openid-configuration`` (generic OIDC), and failing that
``{authority}/v2.0/.well-known/openid-configuration`` (an Entra-style tenant URL), with MSAL's
instance discovery off so nothing but the configured host is contacted.

HTTP goes through a ``requests.Session`` with ``trust_env=False`` (REQUESTS_CA_BUNDLE would
otherwise replace our trust settings) and the SSLContext of :mod:`postline.tls`:
the system trust store plus the connection's ``ca_file``, which therefore applies to the
authority too.

Tokens are kept in memory per process and handed out until 5 minutes before expiry; a
caller passes ``force_refresh=True`` once after a server rejected a token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from postline.errors import LoginRequired, TokenError
from postline.logs import register_secret

log = logging.getLogger("postline.oauth")

REFRESH_AHEAD = 300.0
MICROSOFT_HOSTS = {"login.microsoftonline.com", "login.microsoftonline.us", "login.microsoft.com",
                   "login.windows.net", "login.chinacloudapi.cn",
                   "login.partner.microsoftonline.cn"}
# MSAL adds these itself and refuses them in the scope list.
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}

_PROVIDERS: dict[tuple, Any] = {}
_PROVIDERS_LOCK = threading.Lock()


def http_session(*, ca_file: str | None, verify: bool) -> Any:
    """A requests.Session for the authority that trusts what the mail connection trusts."""
    import requests
    from requests.adapters import HTTPAdapter

    from postline.tls import client_context

    ctx = client_context(verify=verify, ca_file=ca_file)

    class _ContextAdapter(HTTPAdapter):
        # requests' documented hook for using one's own SSLContext.
        def build_connection_pool_key_attributes(self, request, verify_, cert=None):
            host, pool = super().build_connection_pool_key_attributes(request, verify_, cert)
            pool.pop("ca_certs", None)
            pool.pop("ca_cert_dir", None)
            pool["ssl_context"] = ctx
            pool["cert_reqs"] = "CERT_REQUIRED" if verify else "CERT_NONE"
            return host, pool

    s = requests.Session()
    s.trust_env = False
    s.verify = verify
    s.mount("https://", _ContextAdapter())
    return s


def _describe_http_error(authority: str, exc: BaseException) -> TokenError:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return TokenError(f"the authority {authority} has a certificate that is not trusted",
                          hint="set ca_file on the connection to the authority's CA")
    return TokenError(f"cannot reach the authority {authority}: {type(exc).__name__}",
                      hint="check the authority URL and the network", disposition="retriable")


def discover(authority: str, session: Any, timeout: float) -> dict[str, Any]:
    """MSAL constructor arguments for ``authority`` (see the module docstring).

    Raises TokenError when the authority is unreachable or has no OpenID configuration.
    """
    url = authority.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise TokenError(f"authority {authority!r} must be an https:// URL",
                         hint="e.g. https://login.microsoftonline.com/<tenant-id>")
    if parts.hostname.lower() in MICROSOFT_HOSTS:
        return {"authority": url}
    tried = []
    for candidate, kwargs in ((url, {"oidc_authority": url}),
                              (url + "/v2.0", {"authority": url, "instance_discovery": False})):
        conf = candidate + "/.well-known/openid-configuration"
        try:
            resp = session.get(conf, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - requests' errors are many
            raise _describe_http_error(authority, exc) from exc
        tried.append(f"{conf} (HTTP {resp.status_code})")
        if resp.status_code == 200:
            try:
                if "token_endpoint" in resp.json():
                    return kwargs
            except ValueError:
                pass
    raise TokenError(f"authority {authority} has no OpenID configuration: tried "
                     + ", ".join(tried), hint="check the authority URL (for Entra use "
                     "https://login.microsoftonline.com/<tenant-id>)")


def _scopes(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in _RESERVED_SCOPES]


def _token_error(what: str, authority: str, result: dict) -> TokenError:
    err = result.get("error", "unknown_error")
    desc = (result.get("error_description") or "").split("\n")[0][:300]
    cls = LoginRequired if err in ("invalid_grant", "interaction_required") else TokenError
    return cls(f"{what} at {authority} failed: {err}" + (f": {desc}" if desc else ""))


class _BaseProvider:
    """In-memory token with refresh ahead of expiry; subclasses fetch new ones."""

    def __init__(self, *, authority: str, client_id: str, scopes: list[str],
                 ca_file: str | None, verify: bool, timeout: float) -> None:
        self.authority = authority
        self.client_id = client_id
        self.scopes = _scopes(scopes)
        self._ca_file, self._verify, self._timeout = ca_file, verify, timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self._app: Any = None

    @property
    def description(self) -> str:
        return f"{type(self).__name__} for client {self.client_id} at {self.authority}"

    def _app_kwargs(self) -> dict[str, Any]:
        session = http_session(ca_file=self._ca_file, verify=self._verify)
        kwargs = discover(self.authority, session, self._timeout)
        return {**kwargs, "http_client": session, "timeout": self._timeout}

    def token(self, *, force_refresh: bool = False) -> str:
        """A valid access token. Raises TokenError / LoginRequired."""
        with self._lock:
            if (not force_refresh and self._token
                    and time.time() < self._expires - REFRESH_AHEAD):
                return self._token
            try:
                result = self._fetch(force_refresh)
            except TokenError:
                raise
            except Exception as exc:  # noqa: BLE001 - MSAL/requests raise many kinds
                raise _describe_http_error(self.authority, exc) from exc
            token = result["access_token"]
            register_secret(token)
            if result.get("refresh_token"):
                register_secret(result["refresh_token"])
            self._token = token
            self._expires = time.time() + float(result.get("expires_in", 300))
            log.debug("got an access token from %s (expires in %s s, %s)", self.authority,
                      result.get("expires_in"), result.get("token_source", "authority"))
            return token

    def _fetch(self, force_refresh: bool) -> dict:
        raise NotImplementedError


class ClientCredentialsProvider(_BaseProvider):
    """App-only tokens for ``client_id`` + client secret (``oauth_client_credentials``)."""

    def __init__(self, *, client_secret: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        register_secret(client_secret)
        self._secret = client_secret

    def __repr__(self) -> str:
        return f"ClientCredentialsProvider(client_id={self.client_id!r}, secret='***')"

    def _fetch(self, force_refresh: bool) -> dict:
        import msal

        if self._app is None or force_refresh:  # a new app has an empty token cache
            self._app = msal.ConfidentialClientApplication(
                self.client_id, client_credential=self._secret, **self._app_kwargs())
        result = self._app.acquire_token_for_client(self.scopes)
        if "access_token" not in result:
            err = _token_error("client credentials login", self.authority, result)
            raise TokenError(err.message, hint="check client_id, the client secret and scopes")
        return result


class DeviceFlowProvider(_BaseProvider):
    """Tokens for a person who approved once with ``postline login``; the MSAL cache
    (with the refresh token) is sealed in the project's state directory."""

    def __init__(self, *, source: Any, connection: str, direction: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from postline.state.token_cache import cache_path

        self._source = source
        self.connection, self.direction = connection, direction
        self.path = cache_path(source.state_dir, connection, direction)
        self._cache: Any = None

    def _login_hint(self) -> str:
        root = getattr(self._source, "root", None) or "PROJECT"
        # Graph logins have no direction to choose (one sign-in for the mailbox)
        direction = "" if self.direction == "microsoft365" else f" --direction {self.direction}"
        return f"run 'postline login {root} {self.connection}{direction}' again"

    def _load(self) -> Any:
        import msal

        from postline.state import token_cache

        cache = msal.SerializableTokenCache()
        data = token_cache.load(self._source, self.path)
        if data:
            cache.deserialize(data)
        self._cache = cache
        self._app = msal.PublicClientApplication(self.client_id, token_cache=cache,
                                                 **self._app_kwargs())
        return self._app

    def _save(self) -> None:
        from postline.state import token_cache

        if self._cache is not None and self._cache.has_state_changed:
            token_cache.save(self._source, self.path, self._cache.serialize())
            self._cache.has_state_changed = False

    def _fetch(self, force_refresh: bool) -> dict:
        from postline.state.pg_tokens import shared_tokens

        shared = shared_tokens(self._source)
        if shared is None:
            return self._fetch_here(force_refresh)
        # a fleet: one instance at a time refreshes, starting from the newest saved cache
        with shared.refresh_lock(self.path.name):
            self._load()
            return self._fetch_here(force_refresh)

    def _fetch_here(self, force_refresh: bool) -> dict:
        app = self._app or self._load()
        accounts = app.get_accounts()
        if not accounts:
            raise LoginRequired(f"no saved login for connection {self.connection!r} "
                                f"({self.direction})", hint=self._login_hint())
        result = app.acquire_token_silent_with_error(self.scopes, account=accounts[0],
                                                     force_refresh=force_refresh)
        self._save()
        if not result:
            raise LoginRequired(f"the saved login for connection {self.connection!r} "
                                f"({self.direction}) has no usable refresh token",
                                hint=self._login_hint())
        if "access_token" not in result:
            err = _token_error("refreshing the token", self.authority, result)
            if isinstance(err, LoginRequired):
                raise LoginRequired(err.message + " (the login expired or was revoked)",
                                    hint=self._login_hint())
            raise err
        return result

    def login(self, show: Callable[[dict], None]) -> str:
        """Run the device flow: ``show(flow)`` displays link and code; blocks until the
        user approved. Saves the sealed cache; returns the account's user name.
        Raises TokenError."""
        try:
            with self._lock:
                app = self._app or self._load()
                flow = app.initiate_device_flow(scopes=self.scopes)
                if "user_code" not in flow:
                    raise _token_error("starting the device login", self.authority, flow)
                show(flow)
                result = app.acquire_token_by_device_flow(flow)
                if "access_token" not in result:
                    raise _token_error("the device login", self.authority, result)
                register_secret(result["access_token"])
                self._token = result["access_token"]
                self._expires = time.time() + float(result.get("expires_in", 300))
                self._save()
        except TokenError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _describe_http_error(self.authority, exc) from exc
        claims = result.get("id_token_claims") or {}
        return str(claims.get("preferred_username") or claims.get("email")
                   or claims.get("sub") or "?")


def provider_for(source: Any, *, connection: str, direction: str, credential: Any,
                 ca_file: str | None, verify: bool, timeout: float) -> Any:
    """The process-wide provider for this credential (so tokens are not fetched per poll).

    Raises SecretError when the client secret cannot be read.
    """
    common = {"authority": credential.authority, "client_id": credential.client_id,
              "scopes": list(credential.scopes), "ca_file": ca_file, "verify": verify,
              "timeout": timeout}
    key = (str(getattr(source, "state_dir", "")), connection, direction, credential.type,
           credential.authority, credential.client_id, tuple(credential.scopes), ca_file,
           verify)
    with _PROVIDERS_LOCK:
        found = _PROVIDERS.get(key)
        if found is not None:
            return found
        if credential.type == "oauth_client_credentials":
            secret = source.secret(credential.client_secret)
            provider: Any = ClientCredentialsProvider(client_secret=secret, **common)
        else:
            provider = DeviceFlowProvider(source=source, connection=connection,
                                          direction=direction, **common)
        _PROVIDERS[key] = provider
        return provider


def forget_providers() -> None:
    """Drop every cached provider (tests; after ``postline login`` replaced a cache)."""
    with _PROVIDERS_LOCK:
        _PROVIDERS.clear()
