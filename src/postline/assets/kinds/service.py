"""EmailService: send mail through an EmailConnection.

::

    kind: EmailService
    name: Notify
    connection: Mailbox              # an EmailConnection with outgoing smtp, or microsoft365
    send_queue_size: 100             # unsent SendAndForget mails held at most (default 100)
    throttle:                        # optional; none by default
      max_messages: 12
      per: minute                    # second | minute | hour
    default_from: Reports <reports@example.com>   # optional: used when a message has no From
    max_connections: 4               # parallel SMTP sessions (default 4)
    idle_timeout: 30                 # seconds before idle sessions are closed (default 30)
    retry:                           # transient failures (4xx, connection lost before DATA end)
      max_attempts: 5
      min_backoff: 2                 # seconds; doubles per attempt up to max_backoff
      max_backoff: 300
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from postline.assets.kinds.base import AssetModel, Ref, register_kind

_STRICT = ConfigDict(extra="forbid", frozen=True)
PER_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


class Throttle(BaseModel):
    """At most ``max_messages`` delivery attempts in any window of one ``per``."""

    model_config = _STRICT
    max_messages: int = Field(ge=1)
    per: Literal["second", "minute", "hour"]

    @property
    def window(self) -> float:
        return PER_SECONDS[self.per]


class Retry(BaseModel):
    model_config = _STRICT
    max_attempts: int = Field(default=5, ge=1, le=100)
    min_backoff: float = Field(default=2.0, ge=0)
    max_backoff: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> Retry:
        if self.max_backoff < self.min_backoff:
            raise ValueError("max_backoff must be at least min_backoff")
        return self


@register_kind
class EmailService(AssetModel):
    kind: Literal["EmailService"]
    connection: Annotated[str, Ref("EmailConnection")]
    send_queue_size: int = Field(default=100, ge=1, le=1_000_000)
    throttle: Throttle | None = None
    default_from: str | None = None
    max_connections: int = Field(default=4, ge=1, le=64)
    idle_timeout: float = Field(default=30.0, gt=0)
    retry: Retry = Field(default_factory=Retry)

    def shown_defaults(self) -> dict[str, tuple[Any, str]]:
        """``postline show`` says there is no throttle rather than leaving it out."""
        return {"throttle": (None, "default: no limit")} if self.throttle is None else {}
