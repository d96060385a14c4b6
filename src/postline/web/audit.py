"""The console's audit log: one JSON line per change made from the console (when, from
which address, which asset, what changed), in ``<state dir>/audit.jsonl`` (mode 0600).
Values that are or came from secrets are never written: they show as ``***``."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from postline.logs import MASK

log = logging.getLogger("postline.web")

SHOWN = 200


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(data, Mapping):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return out


def changes(old: Mapping | None, new: Mapping | None, *, secret: Iterable[str] = (),
            all_secret: bool = False) -> list[dict[str, Any]]:
    """``[{field, old, new}]`` between two asset documents; fields in ``secret`` (or every
    field with ``all_secret``, a Secret asset) and any ``sealed:`` value masked."""
    a, b = flatten(old or {}), flatten(new or {})
    hidden = set(secret)
    out = []
    for key in list(dict.fromkeys([*a, *b])):
        if a.get(key) == b.get(key):
            continue
        mask = all_secret and key.startswith("values.") or key in hidden

        def shown(v: Any, mask: bool = mask) -> Any:
            if v is None:
                return None
            if mask or (isinstance(v, str) and v.startswith("sealed:")):
                return MASK
            return v
        out.append({"field": key, "old": shown(a.get(key)), "new": shown(b.get(key))})
    return out


@dataclass
class AuditLog:
    """Appends to and reads the audit log at ``path``."""

    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, *, client: str, action: str, asset: str, file: str = "",
               changed: list[dict[str, Any]] | None = None, detail: str = "") -> None:
        """Append one entry. A log that cannot be written is logged as an error (the change
        it describes is already made), never raised."""
        try:
            self._append(client=client, action=action, asset=asset, file=file,
                         changed=changed, detail=detail)
        except OSError as exc:
            log.error("audit log %s cannot be written (%s): %s %s by %s", self.path,
                      exc.strerror or exc, action, asset, client)

    def _append(self, *, client: str, action: str, asset: str, file: str,
                changed: list[dict[str, Any]] | None, detail: str) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "client": client,
                 "action": action, "asset": asset, "file": file, "changes": changed or [],
                 "detail": detail}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)

    def entries(self, limit: int = SHOWN) -> list[dict[str, Any]]:
        """The latest ``limit`` entries, newest first (a damaged line is skipped)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in reversed(lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
            if len(out) >= limit:
                break
        return out

    def page(self) -> str:
        """HTML body of ``/audit``."""
        from postline.web.pages import render

        return render("audit.html", entries=self.entries(), path=str(self.path),
                      now=time.time())


def escape_json(value: Any) -> str:
    return escape(json.dumps(value, ensure_ascii=False))
