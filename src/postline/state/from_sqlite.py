"""``postline state migrate PROJECT --from-sqlite [DIR]``: copy an installation's SQLite
state (ledger, outbox, sealed token caches) into its PostgreSQL StateStore.

Idempotent: a ledger entry already there (same source and key) is kept as it is, so is a
folder's state, an outbox mail with the same service, Message-ID and creation time, and a
token cache of the same name. Run it with the old installation stopped; run it twice and
the second run copies nothing. Token caches are copied sealed, as they are: the same
project key opens them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from postline.errors import ConfigError
from postline.state.ledger_schema import COLS


@dataclass(frozen=True, kw_only=True)
class Copied:
    """How many rows of each kind were found in SQLite and how many were new."""

    ledger: tuple[int, int]
    folders: tuple[int, int]
    outbox: tuple[int, int]
    tokens: tuple[int, int]


def _read(path: Path, query: str) -> list[tuple]:
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from exc
    try:
        return db.execute(query).fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"{path} cannot be read: {exc}",
                          hint="is it a postline ledger or outbox? run the old postline "
                               "once to bring it up to date") from exc
    finally:
        db.close()


def copy_from_sqlite(conn: psycopg.Connection, schema: str, state_dir: Path) -> Copied:
    """Copy the SQLite state in ``state_dir`` into ``schema`` (already migrated) in one
    transaction. Raises ConfigError (unreadable files), psycopg errors."""
    s = sql.Identifier(schema)
    ledger_file, outbox_file = state_dir / "ledger.sqlite3", state_dir / "outbox.sqlite"
    mails = _read(ledger_file, f"SELECT {','.join(COLS)} FROM mails ORDER BY rowid")
    folders = _read(ledger_file, "SELECT source, folder, version FROM folders")
    try:
        states = _read(ledger_file, "SELECT source, folder, name, value FROM folder_state")
    except ConfigError:
        states = []     # a version 1 or 2 ledger: no per-folder state yet
    outbox = _read(outbox_file, "SELECT service, state, message_id, date, message, summary, "
                                "attempts, next_attempt_at, created_at, updated_at, reason, "
                                "result FROM outbox ORDER BY id")
    tokens = [(p.name, p.read_text(encoding="ascii").strip())
              for p in sorted((state_dir / "tokens").glob("*.bin"))]

    def insert(text: str, rows: list[tuple]) -> int:
        new = 0
        for row in rows:
            new += conn.execute(sql.SQL(text).format(s=s), row).rowcount
        return new

    with conn.transaction():
        marks = ",".join(["%s"] * len(COLS))
        n_mails = insert(f"INSERT INTO {{s}}.mails ({','.join(COLS)}) VALUES ({marks}) "
                         "ON CONFLICT (source, key) DO NOTHING",
                         [(*r[:12], bool(r[12]), *r[13:]) for r in mails])
        n_folders = insert("INSERT INTO {s}.folders VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                           folders)
        n_folders += insert("INSERT INTO {s}.folder_state VALUES (%s,%s,%s,%s) ON CONFLICT "
                            "DO NOTHING", states)
        n_outbox = insert(
            "INSERT INTO {s}.outbox (service, state, message_id, date, message, summary, "
            "attempts, next_attempt_at, created_at, updated_at, reason, result) SELECT "
            "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s WHERE NOT EXISTS (SELECT 1 FROM {s}.outbox "
            "WHERE service=%s AND message_id=%s AND created_at=%s)",
            # a mail left 'sending' by the old process may have been delivered: unknown
            [(r[0], "unknown" if r[1] == "sending" else r[1], *r[2:], r[0], r[2], r[8])
             for r in outbox])
        n_tokens = insert("INSERT INTO {s}.tokens (name, sealed) VALUES (%s,%s) ON CONFLICT "
                          "DO NOTHING", tokens)
    return Copied(ledger=(len(mails), n_mails), folders=(len(folders) + len(states),
                                                         n_folders),
                  outbox=(len(outbox), n_outbox), tokens=(len(tokens), n_tokens))


def report_lines(copied: Copied, state_dir: Path, label: str) -> list[str]:
    """What ``state migrate --from-sqlite`` prints."""
    out = [f"{label}: copied from {state_dir}:"]
    for what, (found, new) in (("ledger entries", copied.ledger),
                               ("folder versions and cursors", copied.folders),
                               ("outbox mails", copied.outbox),
                               ("token caches", copied.tokens)):
        out.append(f"  {what}: {new} copied, {found - new} already there")
    return out


def state_dir_of(project: Any, given: str | None) -> Path:
    """The SQLite state directory to copy: ``given`` or the project's. Raises ConfigError
    when it does not exist."""
    path = Path(given).expanduser() if given else Path(project.state_dir)
    if not path.is_dir():
        raise ConfigError(f"--from-sqlite: {path} is not a directory",
                          hint="give the old installation's state directory (by default "
                               "PROJECT/.postline-state)")
    return path
