"""StateStore: where a project keeps its state (ledger, outbox, token cache, leases).

At most one per project; without one, the state is SQLite files in the project's state
directory, as with ``type: sqlite``. ``type: postgresql`` shares the state between every
instance of ``postline run`` that uses the same database (docs/cluster.md)::

    kind: StateStore
    name: Shared
    type: postgresql                  # sqlite (default) | postgresql
    url: postgresql://postline@db.example.com:5432/postline?sslmode=verify-full
    password: DbSecrets.password      # or inside the URL: postgresql://user:pw@host/db
    schema: postline                  # default postline; created by postline
    lease_seconds: 30                 # how long a source stays owned without a heartbeat
    heartbeat_seconds: 10             # default: a third of the lease; less than the lease

The environment variable ``POSTLINE_STATE_URL`` replaces ``url`` (read by the project
loader, like every environment value). ``show`` masks a password inside the URL.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, model_validator

from postline.assets.kinds.base import AssetModel, SecretRef, field_error, register_kind
from postline.logs import MASK

STATE_URL_ENV = "POSTLINE_STATE_URL"
_SCHEMES = ("postgresql", "postgres")
_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
_EXAMPLE = "postgresql://user@host:5432/database"


def split_url(url: str) -> SplitResult:
    """``url`` split, checked as a PostgreSQL URL. Raises ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number, a bad IPv6 literal
        raise ValueError(f"is not a valid URL ({exc}); write it as {_EXAMPLE}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"must start with postgresql:// (got {parts.scheme or 'no scheme'}"
                         f"{':' if parts.scheme else ''}); write it as {_EXAMPLE}")
    if not parts.hostname:
        raise ValueError(f"names no host; write it as {_EXAMPLE}")
    if port == 0:
        raise ValueError("has port 0; use the server's port (PostgreSQL's default is 5432)")
    if not unquote(parts.path.lstrip("/")):
        raise ValueError(f"names no database after the host; write it as {_EXAMPLE}")
    return parts


def mask_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``; anything unparsable as is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return parts._replace(netloc=f"{name}:{MASK}@{host}").geturl()


@register_kind
class StateStore(AssetModel):
    kind: Literal["StateStore"]
    type: Literal["sqlite", "postgresql"] = "sqlite"
    url: str | None = None
    password: SecretRef | None = None
    # "schema" is a (deprecated) BaseModel method: the field is schema_, written schema
    schema_: str = Field(default="postline", alias="schema", pattern=_IDENTIFIER)
    lease_seconds: int = Field(default=30, ge=1, le=3600)
    heartbeat_seconds: float | None = Field(default=None, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0, le=300)

    # at most one StateStore per project (the loader reports a second one, naming both)
    one_per_project: ClassVar[bool] = True
    # fields the environment replaces (field -> variable), applied by the project loader
    env_overrides: ClassVar[dict[str, str]] = {"url": STATE_URL_ENV}

    @model_validator(mode="after")
    def _check(self) -> StateStore:
        if self.type == "sqlite":
            for name in ("url", "password"):
                if getattr(self, name) is not None:
                    raise field_error(name, "applies only to type: postgresql (add 'type: "
                                            "postgresql', or remove it)")
        else:
            if not self.url:
                raise field_error("url", f"is required for type: postgresql ({_EXAMPLE}); or "
                                         f"set {STATE_URL_ENV}")
            try:
                parts = split_url(self.url)
            except ValueError as exc:
                raise field_error("url", str(exc)) from None
            if parts.password is not None and self.password is not None:
                raise field_error("password", "is also given inside url: keep one of them")
        if self.heartbeat_seconds is not None and self.heartbeat_seconds >= self.lease_seconds:
            raise field_error("heartbeat_seconds", f"must be less than lease_seconds "
                                                   f"({self.lease_seconds:g})")
        return self

    @property
    def schema_name(self) -> str:
        """The database schema postline's tables live in."""
        return self.schema_

    @property
    def heartbeat(self) -> float:
        """Seconds between lease renewals: ``heartbeat_seconds``, else a third of the lease."""
        return self.heartbeat_seconds or self.lease_seconds / 3

    @property
    def location(self) -> str:
        """``host:port/database`` of a postgresql store (no user, no password), else ''."""
        if self.type != "postgresql" or not self.url:
            return ""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5432}/{unquote(parts.path.lstrip('/'))}"

    def shown_defaults(self) -> dict[str, tuple[Any, str]]:
        """``show`` explains the heartbeat left out."""
        return {"heartbeat_seconds": (round(self.heartbeat, 3), "default: a third of "
                                      "lease_seconds")}

    def shown_values(self) -> dict[str, Any]:
        """What ``show`` prints instead of a value: the URL with its password masked."""
        return {"url": mask_url(self.url)} if self.url else {}
