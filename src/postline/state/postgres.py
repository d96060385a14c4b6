"""Connections to the PostgreSQL of a ``StateStore`` asset, and one-line errors for their failures.

::

    target = Target.of(project, store)       # reads the password (Secret or URL) once
    with connect(target) as conn: ...        # psycopg.Connection, or a postline error
    pool = open_pool(target, max_size=4)     # psycopg_pool.ConnectionPool, first login checked

Every failure becomes a :class:`postline.errors.PostlineError` whose one line names the
StateStore, the server and the fix: a host that does not resolve or a port nothing listens
on (ConnectError, retriable), a wrong user or password (AuthError), a database that does not
exist or TLS the server does not offer (ConfigError). Passwords are registered with
:func:`postline.logs.register_secret` so no log line shows them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import make_conninfo

from postline.assets.kinds.state_store import STATE_URL_ENV, StateStore, mask_url
from postline.errors import AuthError, ConfigError, ConnectError, PostlineError
from postline.logs import register_secret

APPLICATION_NAME = "postline"


@dataclass(frozen=True, kw_only=True)
class Target:
    """Everything needed to log in to a StateStore's database; the password stays out of repr."""

    label: str                       # StateStore/Shared
    host: str
    port: int
    database: str
    user: str                        # "the default user" when the URL names none (libpq's)
    schema: str
    connect_timeout: float
    conninfo: str = field(repr=False)
    password_from: str               # "the url", "POSTLINE_STATE_URL", "Secret Db.password",
                                     # or "nowhere"
    url_from: str = "url"            # "url" or "POSTLINE_STATE_URL"

    @property
    def where(self) -> str:
        """``host:port/database``, for messages."""
        return f"{self.host}:{self.port}/{self.database}"

    @classmethod
    def of(cls, project: Any, store: StateStore) -> Target:
        """The target of ``store`` (``type: postgresql``). Raises ConfigError for a sqlite
        store, SecretError when the password's Secret cannot be read."""
        label = f"StateStore/{store.name}"
        if store.type != "postgresql" or not store.url:
            raise ConfigError(f"{label} has type {store.type}: there is no server to connect to",
                              hint="set 'type: postgresql' and a url to share the state")
        parts = urlsplit(store.url)
        overridden = {f for f, *_ in project.entry("StateStore", store.name).overrides}
        url_from = STATE_URL_ENV if "url" in overridden else "url"
        password, password_from = None, "nowhere"
        if parts.password is not None:
            password = unquote(parts.password)
            password_from = "the url" if url_from == "url" else url_from
        elif store.password is not None:
            password, password_from = project.secret(store.password), f"Secret {store.password}"
        register_secret(password)
        extra: dict[str, Any] = {"connect_timeout": max(1, round(store.connect_timeout)),
                                 "application_name": APPLICATION_NAME}
        if password is not None:
            extra["password"] = password
        return cls(label=label, host=parts.hostname or "", port=parts.port or 5432,
                   database=unquote(parts.path.lstrip("/")),
                   user=unquote(parts.username) if parts.username else "the default user",
                   schema=store.schema_name, connect_timeout=store.connect_timeout,
                   conninfo=make_conninfo(store.url, **extra), password_from=password_from,
                   url_from=url_from)


def target_of(project: Any, name: str | None = None) -> Target:
    """The target of StateStore ``name``, or of the project's only StateStore.

    Raises ConfigError when there is none (or it is ``type: sqlite``).
    """
    if name is None:
        stores = project.assets("StateStore")
        if not stores:
            raise ConfigError(f"{project.root} has no StateStore asset: its state is SQLite "
                              "files in the state directory",
                              hint="add a StateStore with type: postgresql (docs/cluster.md)")
        name = stores[0].name
    return Target.of(project, project.get("StateStore", name))


def reach(target: Target) -> None:
    """Resolve the host and open a TCP connection to the port, then close it.

    Raises ConnectError saying which of the two failed (psycopg's own message for an
    unreachable server is libpq's, which mixes both).
    """
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"{target.label}: host {target.host} does not resolve "
                           f"({exc.strerror})", hint="check the host in the url") from exc
    last: OSError | None = None
    for family, kind, proto, _name, address in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(target.connect_timeout)
                sock.connect(address)
                return
        except OSError as exc:
            last = exc
    why = "timed out" if isinstance(last, TimeoutError) else \
        (last.strerror or str(last)).lower() if last else "no address"
    raise ConnectError(f"{target.label}: cannot reach PostgreSQL at {target.host}:{target.port}"
                       f" ({why})", hint=f"is the server running there? check the host and "
                                         f"port in {_url_name(target)}") from last


def connect(target: Target, *, autocommit: bool = False) -> psycopg.Connection:
    """A new connection to ``target``. Raises ConnectError, AuthError or ConfigError (see
    the module docstring) with one line naming the StateStore and the fix."""
    try:
        return psycopg.connect(target.conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise login_failure(target, exc) from exc


def login_failure(target: Target, exc: psycopg.Error) -> PostlineError:
    """The postline error for a failed login to ``target``.

    libpq reports a failed connection as text only (no SQLSTATE reaches the client before
    the session exists), so after ruling out DNS and TCP structurally (:func:`reach`), the
    few stable phrases of libpq and the server are matched here, and nowhere else.
    """
    try:
        reach(target)
    except ConnectError as unreachable:
        return unreachable
    text = " ".join(str(exc).split())
    detail = text.rsplit("failed: ", 1)[-1] if "failed: " in text else text
    detail = detail.removeprefix("FATAL: ").strip()
    who = f"as {target.user} to {target.where}"
    if "password authentication failed" in text or "no password supplied" in text:
        return AuthError(f"{target.label}: PostgreSQL refused the password {who} "
                         f"(password from {target.password_from})",
                         hint=_password_hint(target))
    if "does not exist" in text and "database" in text:
        return ConfigError(f"{target.label}: database {target.database} does not exist on "
                           f"{target.host}:{target.port}",
                           hint=f"create it (CREATE DATABASE {target.database} OWNER "
                                f"{target.user}) or fix the database in {_url_name(target)}")
    if "SSL" in text:
        return ConfigError(f"{target.label}: TLS failed {who}: {detail}",
                           hint=f"match sslmode in {_url_name(target)} to what the server "
                                "offers")
    if "pg_hba.conf" in text:
        return AuthError(f"{target.label}: the server does not let {target.user} in from this "
                         f"host ({detail})", hint="add a pg_hba.conf line for this host and "
                                                  "user on the server")
    if "timeout" in text.lower():
        return ConnectError(f"{target.label}: no answer from PostgreSQL at {target.host}:"
                            f"{target.port} within {target.connect_timeout:g} s",
                            hint="is the server overloaded? raise connect_timeout")
    return ConnectError(f"{target.label}: cannot log in {who}: {detail}",
                        hint=f"check {_url_name(target)} and the server's log")


def query_failure(target: Target, exc: psycopg.Error) -> PostlineError:
    """The postline error for a statement that failed on ``target`` after logging in: a lost
    connection is retriable (ConnectError), anything else names the SQLSTATE."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return ConnectError(f"{target.label}: lost the connection to {target.where}: {first}",
                            hint="postline reconnects on the next attempt; see the server's "
                                 "log if it keeps happening")
    return PostlineError(f"{target.label}: PostgreSQL refused a statement on {target.where} "
                         f"({exc.sqlstate or 'no SQLSTATE'}): {first}",
                         hint="see the server's log")


def _url_name(target: Target) -> str:
    return "the StateStore's url" if target.url_from == "url" else target.url_from


def _password_hint(target: Target) -> str:
    if target.password_from in ("the url", STATE_URL_ENV):
        return f"fix the password in {_url_name(target)}"
    if target.password_from.startswith("Secret "):
        ref = target.password_from.removeprefix("Secret ")
        asset, _, key = ref.rpartition(".")
        return f"set it with: postline secret set PROJECT {asset} {key}"
    return "give one: inside the url or as password: SecretAsset.key"


def open_pool(target: Target, *, min_size: int = 1, max_size: int = 4,
              name: str = "postline-state", autocommit: bool = False) -> Any:
    """An open ``psycopg_pool.ConnectionPool`` to ``target``; the first login is checked
    here so a wrong setting fails now, with the errors of :func:`connect`. With
    ``autocommit`` its connections run each statement on its own (explicit transactions
    with ``conn.transaction()``), which spares a read the ROLLBACK the pool sends when the
    connection comes back. Close it with ``pool.close()`` (or use it as a context
    manager)."""
    from psycopg_pool import ConnectionPool

    connect(target).close()
    pool = ConnectionPool(target.conninfo, min_size=min_size, max_size=max_size, name=name,
                          open=False, timeout=max(target.connect_timeout, 1.0),
                          kwargs={"autocommit": autocommit})
    pool.open(wait=True, timeout=max(target.connect_timeout, 1.0) * 2)
    return pool


def shown_url(store: StateStore) -> str:
    """The store's URL for output: the password masked."""
    return mask_url(store.url or "")
