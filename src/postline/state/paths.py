"""Where a project's state files live: the one place that names them.

``<state_dir>/ledger.sqlite3`` (the ledger), ``<state_dir>/outbox.sqlite`` (the outbox),
``<state_dir>/tokens/<connection>-<direction>.bin`` (sealed token caches).
"""

from __future__ import annotations

import re
from pathlib import Path


def ledger_path(state_dir: Path) -> Path:
    """Where a project's ledger lives: ``<state_dir>/ledger.sqlite3``."""
    return Path(state_dir) / "ledger.sqlite3"


def outbox_path(state_dir: Path) -> Path:
    """Where a project's outbox lives: ``<state_dir>/outbox.sqlite``."""
    return Path(state_dir) / "outbox.sqlite"


def token_cache_path(state_dir: Path, connection: str, direction: str) -> Path:
    """Where the sealed token cache of ``connection``/``direction`` lives:
    ``<state_dir>/tokens/<connection>-<direction>.bin`` (odd characters made ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", connection)
    return Path(state_dir) / "tokens" / f"{safe}-{direction}.bin"
