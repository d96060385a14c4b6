"""EmailSource: which mailbox to read, what to skip, how often, and what to do with each mail.

::

    kind: EmailSource
    name: Invoices
    connection: Mailbox                 # an EmailConnection with incoming imap or pop3
    stream_name: "invoices/${mail:received}/${mail:subject}"
    folders: {input: INBOX, done: Archive/Done, error: Errors, ignore: ""}
    filters:
      from:    {blacklist: ["noreply@"], whitelist: []}
      subject: {blacklist: [], whitelist: ["(?i)invoice"]}
    attachments:
      load: true
      max_total_kb: 20480
      blacklist: [{type: "application/x-msdownload"}]
      whitelist: [{type: "application/pdf", max_kb: 10240}, {type: "image/.*"}]
    polling: {interval: 60, timeout: 300, idle: true, full_scan: 1d}  # or {cron: "*/5 * * * *"}
    throttle: {max_streams: 100, per: minute}
    backoff: {min: 1, max: 300, reset_after_streams: 10, reset_after_seconds: 600}
    pop3: {done: delete, error: keep, ignore: keep}
    reprocess: manual                  # manual | reset_on_reappear | reprocess_on_change
    uidvalidity_change: reread         # reread | stop
    failure: {on_failure: rollback, max_retries: 3, min_backoff: 1, max_backoff: 60}
    batch_size: 50                     # mails fetched and committed together
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from postline.assets.kinds.base import (
    AssetModel,
    ConfigWarning,
    Lookup,
    Ref,
    Template,
    register_kind,
)

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

# The ${mail:NAME} macros of a stream name (the runner fills them per mail, see
# postline.workflow.mailjob.deliver); any other name is refused when the project loads.
MAIL_MACROS = ("folder", "from", "subject", "received", "date", "key", "message_id", "id")


def _check_regexes(values: list[str]) -> list[str]:
    for pattern in values:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return values


class Folders(BaseModel):
    """Where mail is read from and moved to. An empty name means: do not move."""

    model_config = _STRICT
    input: str = Field(default="INBOX", min_length=1)
    done: str = ""
    error: str = ""
    ignore: str = ""


class PatternFilter(BaseModel):
    """Regex black- and whitelist for one header (searched, case-insensitive)."""

    model_config = _STRICT
    blacklist: list[str] = Field(default_factory=list)
    whitelist: list[str] = Field(default_factory=list)

    _valid = field_validator("blacklist", "whitelist")(_check_regexes)


class Filters(BaseModel):
    model_config = _STRICT
    from_: PatternFilter = Field(default_factory=PatternFilter, alias="from")
    subject: PatternFilter = Field(default_factory=PatternFilter)


class TypeRule(BaseModel):
    """One attachment rule row: a MIME-type regex (full match) and an optional size limit."""

    model_config = _STRICT
    type: str = Field(min_length=1)
    max_kb: int | None = Field(default=None, ge=0)

    @field_validator("type")
    @classmethod
    def _regex(cls, value: str) -> str:
        _check_regexes([value])
        return value


class Attachments(BaseModel):
    model_config = _STRICT
    load: bool = False
    max_total_kb: int | None = Field(default=None, ge=0)
    blacklist: list[TypeRule] = Field(default_factory=list)
    whitelist: list[TypeRule] = Field(default_factory=list)


class Polling(BaseModel):
    """``interval`` seconds or a ``cron`` expression; ``idle`` uses IMAP IDLE between rounds."""

    model_config = _STRICT
    interval: float | None = Field(default=None, gt=0)
    cron: str | None = None
    timeout: float = Field(default=600.0, gt=0)
    idle: bool = True
    # seconds between full listings of the input folder; rounds in between list only what
    # is new where the reader can (IMAP); 0: every round lists the whole folder
    full_scan: float = Field(default=86400.0, ge=0)

    @field_validator("full_scan", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """``3600``, ``"90s"``, ``"30m"``, ``"12h"``, ``"1d"``, ``"1w"`` -> seconds."""
        if not isinstance(value, str):
            return value
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
        text = value.strip().lower()
        number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
        try:
            seconds = float(number) * units[unit]
        except ValueError:
            seconds = -1.0
        if not seconds >= 0:  # also NaN
            raise ValueError(f"expected seconds or a duration such as 30m, 12h, 1d or 1w "
                             f"(0: every round), not {value!r}")
        return seconds

    @model_validator(mode="after")
    def _one_schedule(self) -> Polling:
        if self.interval is not None and self.cron is not None:
            raise ValueError("give either interval or cron, not both")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"invalid cron expression {self.cron!r} "
                                 "(five fields: minute hour day month weekday)")
        return self

    @property
    def push(self) -> bool:
        """Whether IDLE wakes a round early: on by default, but a ``cron`` schedule is kept
        to unless ``idle: true`` is written next to it."""
        return self.idle and (self.cron is None or "idle" in self.model_fields_set)

    @property
    def every(self) -> float:
        """Seconds between rounds when no cron is set (default 60)."""
        return self.interval if self.interval is not None else 60.0


class Throttle(BaseModel):
    model_config = _STRICT
    max_streams: int | None = Field(default=None, ge=1)
    per: Literal["second", "minute", "hour"] = "minute"

    def shown_defaults(self) -> dict[str, tuple[Any, str]]:
        """``postline show`` says there is no limit rather than leaving max_streams out."""
        return {"max_streams": (None, "default: no limit")} if self.max_streams is None else {}


class Backoff(BaseModel):
    """Pause after failures: doubles from ``min`` to ``max`` seconds; resets after
    ``reset_after_streams`` successful mails or ``reset_after_seconds`` without a failure."""

    model_config = _STRICT
    min: float = Field(default=1.0, ge=0)
    max: float = Field(default=300.0, ge=0)
    reset_after_streams: int | None = Field(default=10, ge=1)
    reset_after_seconds: float | None = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must not be less than min ({self.min})")
        return self


Pop3Action = Literal["delete", "keep"]


class Pop3Options(BaseModel):
    """POP3 has no folders: after done, error or ignore the mail is deleted or kept."""

    model_config = _STRICT
    done: Pop3Action = "keep"
    error: Pop3Action = "keep"
    ignore: Pop3Action = "keep"


class Failure(BaseModel):
    model_config = _STRICT
    on_failure: Literal["rollback", "retry"] = "rollback"
    max_retries: int = Field(default=3, ge=0)
    min_backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> Failure:
        if self.max_backoff < self.min_backoff:
            raise ValueError(f"max_backoff ({self.max_backoff}) must not be less than "
                             f"min_backoff ({self.min_backoff})")
        return self


@register_kind
class EmailSource(AssetModel):
    kind: Literal["EmailSource"]
    connection: Annotated[str, Ref("EmailConnection")]
    # ${mail:...} and ${date:...} stay in the text when the project loads and are expanded
    # for each mail (the date is the time the mail is processed).
    stream_name: Annotated[str, Template()] = "${mail:key}"
    folders: Folders = Field(default_factory=Folders)
    filters: Filters = Field(default_factory=Filters)
    attachments: Attachments = Field(default_factory=Attachments)
    polling: Polling = Field(default_factory=Polling)
    throttle: Throttle = Field(default_factory=Throttle)
    backoff: Backoff = Field(default_factory=Backoff)
    pop3: Pop3Options = Field(default_factory=Pop3Options)
    reprocess: Literal["manual", "reset_on_reappear", "reprocess_on_change"] = "manual"
    uidvalidity_change: Literal["reread", "stop"] = "reread"
    failure: Failure = Field(default_factory=Failure)
    batch_size: int = Field(default=50, ge=1, le=1000)

    @field_validator("stream_name")
    @classmethod
    def _known_mail_macros(cls, value: str) -> str:
        from postline.assets.macros import MacroContext, MacroError, expand
        from postline.assets.validation import suggest

        unknown: list[str] = []

        def probe(name: str) -> str | None:
            if name in MAIL_MACROS:
                return "x"
            unknown.append(name)
            return None

        try:  # also checks the ${date:...} formats
            expand(value, MacroContext().with_prefix("mail", probe))
        except MacroError as exc:
            if not unknown:
                raise ValueError(exc.message) from None
            known = ", ".join(MAIL_MACROS)
            raise ValueError(f"unknown macro ${{mail:{unknown[0]}}}"
                             f"{suggest(unknown[0], MAIL_MACROS)}; a mail gives: {known}"
                             ) from None
        return value

    def config_warnings(self) -> list[ConfigWarning]:
        out: list[ConfigWarning] = []
        a = self.attachments
        if not a.load:
            for name in ("max_total_kb", "blacklist", "whitelist"):
                if name in a.model_fields_set and getattr(a, name):
                    out.append(ConfigWarning(
                        f"attachments.{name}", "has no effect while attachments.load is "
                        "false (attachments are listed in the record but not loaded)"))
        p = self.polling
        if p.cron is not None and p.idle and "idle" in p.model_fields_set:
            out.append(ConfigWarning(
                "polling.idle", "with idle: true new mail is read as soon as it arrives; "
                "the cron schedule only adds rounds (leave idle out to read on the schedule "
                "alone)"))
        return out

    def project_warnings(self, lookup: Lookup) -> list[ConfigWarning]:
        conn = lookup("EmailConnection", self.connection)
        incoming = getattr(conn, "incoming", None)
        if getattr(incoming, "protocol", None) != "pop3":
            return []
        out = [ConfigWarning(f"folders.{name}", f"is not used: {self.connection} reads "
                             f"POP3, which has no folders (use pop3.{option}: delete or "
                             "keep)")
               for name, option in (("done", "done"), ("error", "error"),
                                    ("ignore", "ignore"))
               if getattr(self.folders, name)]
        if self.folders.input.upper() != "INBOX":
            out.append(ConfigWarning("folders.input", f"is not used: {self.connection} "
                                     "reads POP3, which has only the INBOX"))
        return out
