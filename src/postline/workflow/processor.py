"""The optional Python processor of a Workflow: ``on_message(message, ctx)``.

``message`` is the record (a dict). The function may change it in place, return a new
dict (which replaces it), or raise to fail the mail (rollback or retry per the source's
``failure`` settings). ``ctx`` offers:

* ``ctx.services.<LogicalName>`` - the EmailService mapped in the workflow's ``services``
  (opened on first use), with ``Send``/``SendAndForget``;
* ``ctx.log`` - a logger named ``postline.processor.<workflow>``;
* ``ctx.source`` - the EmailSource model; ``ctx.workflow`` - the workflow's name;
* ``ctx.key`` - the ledger key of the mail being processed.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from postline.errors import ConfigError

log = logging.getLogger(__name__)


class Services:
    """Attribute access to the mapped Email Services, each opened lazily once."""

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


Processor = Callable[[dict[str, Any], Context], Any]


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
    except Exception as exc:
        raise ConfigError(f"processor {path} of workflow {workflow} failed to import: "
                          f"{type(exc).__name__}: {exc}") from exc
    fn = getattr(module, "on_message", None)
    if not callable(fn):
        raise ConfigError(f"processor {path} of workflow {workflow} defines no "
                          "on_message(message, ctx) function")
    return fn


def apply(processor: Processor | None, record: dict[str, Any], ctx: Context
          ) -> dict[str, Any]:
    """Run the processor on ``record``; returns the record to sink. Raises what it raises."""
    if processor is None:
        return record
    result = processor(record, ctx)
    if result is None:
        return record
    if not isinstance(result, dict):
        raise TypeError(f"on_message returned {type(result).__name__}; return a dict or None")
    return result
