"""Logging set-up and the redaction filter that keeps secrets out of every log line.

Code registers each secret value it resolves with :func:`register_secret`; the filter
replaces any occurrence in a log record's final message with ``***``. This is a safety net:
code should not log secrets in the first place.

Two formats (``postline --log-format text|json``, or ``POSTLINE_LOG_FORMAT``): ``text``
(``2026-12-02 07:00:00,123 INFO postline.mail: workflow=... key=...``) and ``json``, one
object per line for log shippers (Loki, Elasticsearch, CloudWatch): ``ts`` (ISO-8601 UTC),
``level``, ``logger``, ``msg``, and the record's structured ``fields`` (a mail's line has
``workflow``, ``key``, ``subject``, ``outcome``, ``ms`` and ``reason``). :func:`say` writes
the CLI's own lines (errors, the run's summary) in the same format.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

_SECRETS: set[str] = set()
_BY_LENGTH: tuple[str, ...] = ()      # _SECRETS, longest first (a secret may contain another)
_LOCK = threading.Lock()
MASK = "***"


def register_secret(value: str | bytes | None) -> None:
    """Mask ``value`` in every log line from now on (values shorter than 4 chars are ignored)."""
    if not value:
        return
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return
    if len(value) < 4:
        return
    global _BY_LENGTH
    with _LOCK:
        if value not in _SECRETS:
            _SECRETS.add(value)
            _BY_LENGTH = tuple(sorted(_SECRETS, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for s in _BY_LENGTH:
        if s in text:
            text = text.replace(s, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            # the message is formatted once, here; the formatter then takes it as it is
            record.msg, record.args = redact(record.getMessage()), ()
        return True


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (not the one at set-up time), so logging
    keeps working when stderr is replaced (tests capturing output, daemons re-opening it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


FORMATS = ("text", "json")
_format = "text"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def json_line(*, ts: float, level: str, logger: str, msg: str, fields: dict | None = None,
              exc: str | None = None) -> str:
    """One JSON log line (secrets masked). ``fields`` never override the four base keys."""
    obj = {"ts": _iso(ts), "level": level, "logger": logger, "msg": redact(msg)}
    for k, v in (fields or {}).items():
        obj.setdefault(k, redact(v) if isinstance(v, str) else v)
    if exc:
        obj["exc"] = redact(exc)
    return json.dumps(obj, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return json_line(ts=record.created, level=record.levelname, logger=record.name,
                         msg=record.getMessage(), fields=getattr(record, "fields", None),
                         exc=exc)


def say(line: str, *, level: str = "INFO", **fields) -> None:
    """A line of the CLI's own on stderr (one line, secrets masked): as it is, or as a JSON
    log line with ``fields`` when the log format is json."""
    line = " ".join(line.splitlines())
    if _format == "json":
        print(json_line(ts=time.time(), level=level, logger="postline", msg=line,
                        fields=fields), file=sys.stderr, flush=True)
    else:
        print(redact(line), file=sys.stderr, flush=True)


def setup_logging(verbosity: int = 0, fmt: str = "text") -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv; ``fmt`` text or
    json (see the module docstring)."""
    global _format
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    _format = fmt if fmt in FORMATS else "text"
    formatter = (JsonFormatter() if _format == "json" else
                 logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in root.handlers:
        if getattr(h, "_postline", False):
            h.setFormatter(formatter)
            root.setLevel(level)
            return
    handler = _CurrentStderrHandler()
    handler._postline = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    # Nothing of ours logs caller, thread or process; not collecting them per record is
    # the logging HOWTO's own optimisation and a third of the cost of a line (postline
    # run logs one per mail).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.addHandler(handler)
    root.setLevel(level)
