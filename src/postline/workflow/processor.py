"""The optional Python processor of a Workflow: ``on_message(message, ctx)``.

``message`` is the record (a dict). The function may change it in place, return a new
dict (which replaces it), raise :class:`Ignore` (or call ``ctx.ignore(reason)``) to skip the
mail on purpose, or raise anything else to fail the mail (rollback or retry per the
source's ``failure`` settings; ``SystemExit`` and ``KeyboardInterrupt`` fail the mail too,
they do not stop the run). The record handed on always carries the ledger's ``key``: the
sinks deduplicate by it, so a processor's own value is replaced (with a warning). ``ctx``
offers:

* ``ctx.services.<LogicalName>`` - the EmailService mapped in the workflow's ``services``
  (opened when the run starts, so it delivers mail queued by an earlier process), with
  ``Send``/``SendAndForget``;
* ``ctx.log`` - a logger named ``postline.processor.<workflow>``;
* ``ctx.source`` - the EmailSource model; ``ctx.workflow`` - the workflow's name;
* ``ctx.key`` - the ledger key of the mail being processed;
* ``ctx.ignore(reason)`` - raises :class:`Ignore`.

Errors: :func:`load_processor` raises ConfigError naming the file (and line);
:func:`apply` raises :class:`ProcessorError` naming the exception and the line of the
processor file it came from, lets :class:`Ignore` and StorageError out as they are.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from postline.errors import ConfigError, Ignore, PostlineError, StorageError
from postline.logs import redact

log = logging.getLogger(__name__)


class ProcessorError(Exception):
    """``on_message`` raised (or exited); ``str()`` is ``Type: message (at file:line)``."""


# A processor calling sys.exit() or raising KeyboardInterrupt means "this mail failed",
# not "stop the run" (postline stops on its own signals). Other BaseExceptions are left
# alone: they are the process dying.
_EXITS = (SystemExit, KeyboardInterrupt, GeneratorExit)


class Services:
    """Attribute access to the mapped Email Services, each opened once (:meth:`open_all` at
    the start of a run, else on first use)."""

    def __init__(self, mapping: Mapping[str, str], opener: Callable[[str], Any] | None) -> None:
        self._mapping = dict(mapping)
        self._opener = opener
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getattr__(self, logical: str) -> Any:
        if logical.startswith("_"):
            raise AttributeError(logical)
        if logical not in self._mapping:
            known = ", ".join(sorted(self._mapping)) or "none"
            raise AttributeError(f"no service {logical!r} is mapped in this workflow "
                                 f"(mapped: {known}); add it under services:")
        with self._lock:
            if logical not in self._open:
                if self._opener is None:
                    raise ConfigError("Email Services are not available in this installation")
                self._open[logical] = self._opener(self._mapping[logical])
            return self._open[logical]

    def __getitem__(self, logical: str) -> Any:
        return getattr(self, logical)

    def open_all(self) -> None:
        """Open every mapped service now: a running service delivers the SendAndForget
        mails an earlier process left queued, and it should not wait for a processor to
        use it (with no new mail, none would). A service that cannot be opened is logged
        as a warning; the processor gets the error when it uses it. Never raises."""
        for logical in self._mapping:
            try:
                getattr(self, logical)
            except PostlineError as exc:
                log.warning("Email Service %s (%s) could not be opened: %s", logical,
                            self._mapping[logical], exc)

    def close(self) -> None:
        """Close every service opened so far; never raises (failures are logged)."""
        with self._lock:  # a processor thread may still be opening one
            opened = list(self._open.items())
        for logical, svc in opened:
            close = getattr(svc, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - closing must not hide the run's outcome
                    # ... but the user should learn that a service did not shut down cleanly
                    log.warning("closing Email Service %s failed: %s", logical, exc)


class Context:
    """What ``on_message`` gets as ``ctx``."""

    def __init__(self, *, services: Services, log: logging.Logger, source: Any,
                 workflow: str) -> None:
        self.services = services
        self.log = log
        self.source = source
        self.workflow = workflow
        self.key: str | None = None

    def ignore(self, reason: str = "") -> NoReturn:
        """Skip the mail being processed: raises :class:`Ignore` with ``reason``."""
        raise Ignore(reason)


Processor = Callable[[dict[str, Any], Context], Any]


def _shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (what the user
    typed, usually), else as it is."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _where(exc: BaseException, filename: str) -> str:
    """`` (at FILE:LINE)`` of the innermost traceback frame in ``filename``, or ""."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    if line is None and isinstance(exc, SyntaxError) and exc.filename == filename:
        line = exc.lineno
    return f" (at {_shown(filename)}:{line})" if line is not None else ""


def _describe(exc: BaseException, limit: int = 400) -> str:
    # cut here, so that the reason's 500 characters keep the "(at file:line)" after it
    text = str(exc)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _file_of(processor: Processor) -> str | None:
    module = sys.modules.get(getattr(processor, "__module__", "") or "")
    name = getattr(module, "__file__", None)
    return name or getattr(getattr(processor, "__code__", None), "co_filename", None)


def _check_signature(fn: Callable[..., Any], path: Path) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or the like: nothing to check
        return
    try:
        sig.bind(None, None)
    except TypeError:
        raise ConfigError(f"{_shown(path)}: on_message must take (message, ctx), it takes "
                          f"{sig}") from None


def load_processor(path: Path, *, workflow: str) -> Processor:
    """Import ``path`` and return its ``on_message``. Raises ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"processor {path} of workflow {workflow} does not exist",
                          hint="processor: is a .py file path relative to the project")
    name = f"postline_processor_{workflow.replace('-', '_').replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"processor {path} of workflow {workflow} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, *_EXITS) as exc:
        # one line: the error and the line of the processor it came from (an import)
        first = _describe(exc).splitlines()[0]
        raise ConfigError(redact(f"processor {path} of workflow {workflow} failed to import: "
                                 f"{first}{_where(exc, str(path))}")) from exc
    fn = getattr(module, "on_message", None)
    if not callable(fn):
        raise ConfigError(f"processor {path} of workflow {workflow} defines no "
                          "on_message(message, ctx) function")
    _check_signature(fn, path)
    return fn


def apply(processor: Processor | None, record: dict[str, Any], ctx: Context | None, *,
          key: str) -> dict[str, Any]:
    """Run the processor on ``record`` of the mail with ledger key ``key``; returns the
    record to sink, whose ``"key"`` is ``key`` whatever the processor did. Raises
    :class:`Ignore` and StorageError as they come, ProcessorError for anything else the
    processor raised (SystemExit and KeyboardInterrupt included)."""
    if processor is None:
        record["key"] = key
        return record
    plog = ctx.log if ctx is not None else log
    try:
        result = processor(record, ctx)  # type: ignore[arg-type]
    except (Ignore, StorageError):
        raise
    except (Exception, *_EXITS) as exc:
        filename = _file_of(processor)
        where = _where(exc, filename) if filename else ""
        # the whole traceback for `postline -vv`, in the message and masked (a handler's
        # exc_info text is not masked, and a traceback may quote a secret)
        plog.debug("on_message failed on %s:\n%s", key,
                   redact("".join(traceback.format_exception(exc)).rstrip()))
        raise ProcessorError(redact(_describe(exc) + where)) from exc
    if result is None:
        result = record
    elif not isinstance(result, dict):
        raise TypeError(f"on_message returned {type(result).__name__}; return a dict or None")
    if result.get("key", key) != key:
        # the sinks deduplicate by the key: a processor's own value would make them drop
        # mails as "already written"
        plog.warning("on_message changed the record's key of %s to %r; the ledger key is "
                     "kept (put your own id in another field)", key, result["key"])
    result["key"] = key
    return result
