"""Logging set-up and the redaction filter that keeps secrets out of every log line.

Code registers each secret value it resolves with :func:`register_secret`; the filter
replaces any occurrence in a log record's final message with ``***``. This is a safety net:
code should not log secrets in the first place.
"""

from __future__ import annotations

import logging
import sys
import threading

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


def setup_logging(verbosity: int = 0) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    if any(getattr(h, "_postline", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = _CurrentStderrHandler()
    handler._postline = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    # Nothing of ours logs caller, thread or process; not collecting them per record is
    # the logging HOWTO's own optimisation and a third of the cost of a line (postline
    # run logs one per mail).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.addHandler(handler)
    root.setLevel(level)
