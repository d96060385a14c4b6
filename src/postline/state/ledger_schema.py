"""The SQLite ledger's tables, indexes and versions (what ``ledger.py`` stores, and how an
older ledger file is brought up to date).

Every query a round, ``postline ledger`` or the console runs has an index, so none reads a
number of rows that grows with the ledger (tested on the plans in
tests/unit/source/test_ledger_plans.py; timed at ten million entries by
bench/ledger_scale.py):

=====================================  ==============================================
query                                  index
=====================================  ==============================================
one mail by key (every round, acquire)  the primary key (source, key)
duplicates by Message-ID / hash         mails_mid (source, message_id)
pending entries of a folder (a round)   mails_pending (source, folder) WHERE settled=0
``ledger list [--state S]``             mails_created (source, created),
                                        mails_state (source, state, created)
console: newest first; ``prune``        mails_updated (source, updated)
entries per state (console, /status)    state_counts, kept by triggers
``ledger reset --id`` (and duplicates)  the primary key, mails_dup (source, dup_of)
=====================================  ==============================================

Versions: 1 (the first); 2 adds the ``fingerprint`` column (the content fingerprint of the
duplicate check); 3 adds ``folder_state`` (per-folder cursors and the time of the last full
listing), ``state_counts`` and the indexes above. :func:`migrate` brings a file up to
:data:`LEDGER_VERSION` in one transaction; a file of a newer version is refused by the
ledger (never written by a postline that does not know its meaning).
"""

from __future__ import annotations

import sqlite3

from postline.state.sqlite import migrate as store_migrate

LEDGER_VERSION = 3

TABLES = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mails (
  source TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
  connection TEXT NOT NULL DEFAULT '', folder TEXT NOT NULL DEFAULT '',
  folder_version TEXT NOT NULL DEFAULT '', server_id TEXT NOT NULL DEFAULT '',
  reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, message_id TEXT, content_hash TEXT,
  subject TEXT, settled INTEGER NOT NULL DEFAULT 0, dup_of TEXT,
  created REAL NOT NULL, updated REAL NOT NULL, fingerprint TEXT,
  PRIMARY KEY (source, key));
CREATE INDEX IF NOT EXISTS mails_mid ON mails (source, message_id);
CREATE TABLE IF NOT EXISTS folders (
  source TEXT NOT NULL, folder TEXT NOT NULL, version TEXT NOT NULL,
  PRIMARY KEY (source, folder));
"""

# Version 3. folder_state holds small named values per folder of a source, each a string:
#   cursor        the reader's cursor after the last complete round (IMAP: UIDNEXT - 1)
#   cursor_version  the folder version (UIDVALIDITY) the cursor belongs to
#   full_scan_at  when the last complete full listing of the folder started (Unix time)
#   rescan_at     when the ledger was reset (the next round lists the folder in full)
# Other readers may keep their own names here (a Graph delta link, say).
# state_counts is kept by triggers: counting ten million entries by state takes ~0.8 s,
# reading these rows nothing (the console and /status ask on every refresh).
V3 = [
    """CREATE TABLE IF NOT EXISTS folder_state (
         source TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
         PRIMARY KEY (source, folder, name)) WITHOUT ROWID""",
    "DROP INDEX IF EXISTS mails_state",
    "CREATE INDEX IF NOT EXISTS mails_state ON mails (source, state, created)",
    "CREATE INDEX IF NOT EXISTS mails_created ON mails (source, created)",
    "CREATE INDEX IF NOT EXISTS mails_updated ON mails (source, updated)",
    "CREATE INDEX IF NOT EXISTS mails_pending ON mails (source, folder) WHERE settled=0",
    "CREATE INDEX IF NOT EXISTS mails_dup ON mails (source, dup_of) WHERE dup_of IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS state_counts (
         source TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
         PRIMARY KEY (source, state)) WITHOUT ROWID""",
    "DELETE FROM state_counts",
    """INSERT INTO state_counts SELECT source, state, COUNT(*) FROM mails
         GROUP BY source, state""",
    *(f"CREATE TRIGGER IF NOT EXISTS {name} {sql}" for name, sql in {
        "mails_counted_in": """AFTER INSERT ON mails BEGIN
           INSERT INTO state_counts VALUES (NEW.source, NEW.state, 1)
             ON CONFLICT (source, state) DO UPDATE SET n = n + 1; END""",
        "mails_counted_out": """AFTER DELETE ON mails BEGIN
           UPDATE state_counts SET n = n - 1 WHERE source = OLD.source AND state = OLD.state;
           END""",
        "mails_counted_change": """AFTER UPDATE OF source, state ON mails
           WHEN OLD.state != NEW.state OR OLD.source != NEW.source BEGIN
           UPDATE state_counts SET n = n - 1 WHERE source = OLD.source AND state = OLD.state;
           INSERT INTO state_counts VALUES (NEW.source, NEW.state, 1)
             ON CONFLICT (source, state) DO UPDATE SET n = n + 1; END""",
    }.items()),
]

COLS = ("source", "key", "state", "connection", "folder", "folder_version", "server_id",
        "reason", "attempts", "message_id", "content_hash", "subject", "settled", "dup_of",
        "created", "updated", "fingerprint")


def migrate(db: sqlite3.Connection) -> int:
    """Create the tables of a new ledger, or bring an older one to :data:`LEDGER_VERSION`
    (in one transaction, by :func:`postline.state.sqlite.migrate`; building the version 3
    indexes takes ~2.3 s per million entries on a small machine, once). Returns the
    version the file had (0 for a new one); a newer version is returned untouched for the
    caller to refuse. Raises sqlite3.Error."""
    return store_migrate(db, version=LEDGER_VERSION, upgrade=_upgrade)


def _upgrade(db: sqlite3.Connection, found: int) -> None:
    # every step is idempotent: one path serves a new file and each older version
    for statement in TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    # version 2: a version 1 file's mails table has no fingerprint column yet
    if "fingerprint" not in {r[1] for r in db.execute("PRAGMA table_info(mails)")}:
        db.execute("ALTER TABLE mails ADD COLUMN fingerprint TEXT")
    for statement in V3:
        db.execute(statement)
