"""The words of postline's stored states, as types (stored as their values: the files and
tables hold the same strings as before these types existed, so nothing was migrated).

A module of its own with no imports of note, so the CLI and the web layer can name states
without loading a store.
"""

from __future__ import annotations

import enum


class LedgerState(enum.StrEnum):
    """The state of a ledger entry (see :mod:`postline.state.ledger`)."""

    ACQUIRED = "acquired"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"


class OutboxState(enum.StrEnum):
    """The state of a mail in the outbox (see :mod:`postline.state.outbox`)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
