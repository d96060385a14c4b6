"""One validation problem (error, warning or note), printed as one line a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Problem:
    """``file:line: [warning: |note: ]Kind/name: field.path: message``.

    ``file`` is the path as the user will recognise it (relative to where they pointed
    postline); ``asset`` is ``Kind/name`` or None for file-level problems (syntax errors).
    """

    file: str
    line: int
    message: str
    asset: str | None = None
    field: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}:"]
        if self.severity != "error":
            parts.append(f"{self.severity}:")
        if self.asset:
            parts.append(f"{self.asset}:")
        if self.field:
            parts.append(f"{self.field}:")
        parts.append(self.message)
        return " ".join(parts)

    def as_dict(self) -> dict:
        """A JSON-ready form (``postline validate --json``)."""
        return {"file": self.file, "line": self.line, "severity": self.severity,
                "asset": self.asset, "field": self.field, "message": self.message,
                "text": str(self)}


def format_path(path: tuple) -> str:
    """``("incoming", "credential", "secret")`` -> ``incoming.credential.secret``.

    Integer parts (list indexes) print as ``[i]``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
