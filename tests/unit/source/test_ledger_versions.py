"""A ledger written by an earlier postline (version 1, no fingerprints) is brought to the
current version when opened for writing, its stored values unchanged; opened read-only (the
web console) it is read as it is. Its done entries match any content, as they did."""

from __future__ import annotations

import sqlite3

import pytest

from postline.errors import ConfigError
from postline.state.ledger import LEDGER_VERSION, Outcome, Place, SqliteLedger

# the schema of ledger version 1, as postline wrote it before fingerprints
_V1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE mails (
  source TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
  connection TEXT NOT NULL DEFAULT '', folder TEXT NOT NULL DEFAULT '',
  folder_version TEXT NOT NULL DEFAULT '', server_id TEXT NOT NULL DEFAULT '',
  reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, message_id TEXT, content_hash TEXT,
  subject TEXT, settled INTEGER NOT NULL DEFAULT 0, dup_of TEXT,
  created REAL NOT NULL, updated REAL NOT NULL,
  PRIMARY KEY (source, key));
CREATE INDEX mails_state ON mails (source, state);
CREATE INDEX mails_mid ON mails (source, message_id);
CREATE TABLE folders (
  source TEXT NOT NULL, folder TEXT NOT NULL, version TEXT NOT NULL,
  PRIMARY KEY (source, folder));
INSERT INTO meta VALUES ('version', '1');
INSERT INTO mails VALUES ('Src', 'Box/INBOX/7/1', 'done', 'Box', 'INBOX', '7', '1', NULL, 1,
  '<old@example.test>', NULL, 'an old mail', 1, NULL, 1000.0, 1000.0);
"""


@pytest.fixture
def v1_ledger(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_V1)
    db.close()
    return path


def _rows(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM mails").fetchall()
    finally:
        db.close()


def test_a_version_1_ledger_is_migrated_with_its_values_unchanged(v1_ledger):
    before = _rows(v1_ledger)
    led = SqliteLedger(path=v1_ledger)
    try:
        [old] = led.done_entries("Src", ["<old@example.test>"])["<old@example.test>"]
        assert (old.key, old.subject, old.settled, old.fingerprint) == \
            ("Box/INBOX/7/1", "an old mail", True, None)
        led.acquire("Src", [Place(key="Box/INBOX/7/2", connection="Box", folder="INBOX",
                                  folder_version="7", server_id="2")])
        led.finish("Src", [Outcome(key="Box/INBOX/7/2", state="done",
                                   message_id="<old@example.test>", fingerprint="ab" * 32)])
        entries = led.done_entries("Src", ["<old@example.test>"])["<old@example.test>"]
        assert [e.fingerprint for e in entries] == [None, "ab" * 32]
    finally:
        led.close()
    assert [r[:16] for r in _rows(v1_ledger)][:1] == before   # stored values as they were
    db = sqlite3.connect(v1_ledger)
    assert db.execute("SELECT value FROM meta WHERE name='version'").fetchone() == \
        (str(LEDGER_VERSION),)
    db.close()
    SqliteLedger(path=v1_ledger).close()   # opening it again changes nothing


def test_a_version_1_ledger_reads_without_a_migration(v1_ledger):
    led = SqliteLedger(path=v1_ledger, read_only=True)
    try:
        [entry] = led.entries("Src")
        assert (entry.key, entry.fingerprint) == ("Box/INBOX/7/1", None)
    finally:
        led.close()
    db = sqlite3.connect(v1_ledger)
    assert db.execute("SELECT value FROM meta WHERE name='version'").fetchone() == ("1",)
    db.close()


def test_a_newer_ledger_is_refused(v1_ledger):
    db = sqlite3.connect(v1_ledger)
    db.execute("UPDATE meta SET value='99' WHERE name='version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="written by a newer postline"):
        SqliteLedger(path=v1_ledger)
