"""Results of the Email Service as plain data (for the CLI, the HTTP API and the outbox)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from postline.protocols.base import RecipientStatus, SendResult


@dataclass(frozen=True)
class QueuedMail:
    """What SendAndForget returns: the outbox id and the Message-ID the mail will carry."""

    id: int
    message_id: str
    service: str
    state: str = "queued"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "message_id": self.message_id, "service": self.service,
                "state": self.state}


def result_to_json(result: SendResult) -> dict[str, Any]:
    """``result`` as a JSON-able dict: message_id, server_reply, accepted, refused, recipients."""
    def status(r: RecipientStatus) -> dict[str, Any]:
        return {"address": r.address, "accepted": r.accepted, "code": r.code,
                "message": r.message}

    return {
        "message_id": result.message_id,
        "server_reply": result.server_reply,
        "accepted": list(result.accepted),
        "refused": [status(r) for r in result.refused],
        "recipients": [status(r) for r in result.recipients],
    }


def error_to_json(exc: Exception) -> dict[str, Any]:
    """A postline error as ``{error, field, retriable, outcome, code}`` (for HTTP and --json)."""
    return {
        "error": str(exc),
        "type": type(exc).__name__,
        "field": getattr(exc, "field", None),
        "retriable": bool(getattr(exc, "retriable", False)),
        "outcome": getattr(exc, "outcome", None),
        "code": getattr(exc, "code", None),
        **({"problems": [{"error": str(p), "field": p.field} for p in getattr(exc, "problems", ())]}
           if getattr(exc, "problems", ()) else {}),
    }
