"""Every query the ledger runs is answered through an index, never by reading all of a
source's entries: SQLite's EXPLAIN QUERY PLAN of each statement, as the ledger sent it
(bench/ledger_scale.py times the same queries at ten million entries)."""

from __future__ import annotations

import sqlite3

import pytest

from postline.state.ledger import Outcome, Place, SqliteLedger
from postline.state.ledger_schema import LEDGER_VERSION


def place(i: int, folder: str = "INBOX") -> Place:
    return Place(key=f"Box/{folder}/1/{i}", connection="Box", folder=folder,
                 folder_version="1", server_id=str(i))


@pytest.fixture
def led(tmp_path):
    led = SqliteLedger(path=tmp_path / "l.sqlite3")
    led.acquire("S", [place(i) for i in range(200)])
    led.finish("S", [Outcome(key=f"Box/INBOX/1/{i}", state="done" if i % 7 else "failed",
                             message_id=f"<{i}@x>", settled=i % 5 != 0) for i in range(190)])
    # SQLite plans without statistics here; ANALYZE (which a big ledger never ran either)
    # would only make the choice easier
    yield led
    led.close()


def _statements(led: SqliteLedger, call) -> list[str]:
    """The SQL statements (parameters filled in) that ``call`` makes the ledger run."""
    seen: list[str] = []
    for db in (led._db, led._rdb):
        db.set_trace_callback(seen.append)
    try:
        call()
    finally:
        for db in (led._db, led._rdb):
            db.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE",
                                                               "INSERT"))]


def _plans(led: SqliteLedger, statements: list[str]) -> list[str]:
    db = sqlite3.connect(str(led.path))
    try:
        return [" | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + s))
                for s in statements]
    finally:
        db.close()


CALLS = {
    "states": lambda led: led.states("S", [f"Box/INBOX/1/{i}" for i in range(10)]),
    "get_many": lambda led: led.get_many("S", [f"Box/INBOX/1/{i}" for i in range(10)]),
    "acquire": lambda led: led.acquire("S", [place(i) for i in range(300, 310)]),
    "finish": lambda led: led.finish("S", [Outcome(key="Box/INBOX/1/300", state="done")]),
    "mark_settled": lambda led: led.mark_settled("S", ["Box/INBOX/1/5"]),
    "pending": lambda led: led.pending("S", "INBOX"),
    "folder_state": lambda led: led.folder_state("S", "INBOX"),
    "set_folder_state": lambda led: led.set_folder_state("S", "INBOX", {"cursor": "9"}),
    "find_done_many": lambda led: led.find_done_many("S", ["<1@x>", "<2@x>"]),
    "find_done_newest": lambda led: led.find_done("S", "<1@x>", newest=True),
    "list": lambda led: led.entries("S", limit=100),
    "list_state": lambda led: led.entries("S", state="failed", limit=100),
    "list_newest": lambda led: led.entries("S", limit=100, newest_first=True),
    "counts": lambda led: led.counts("S"),
    "reset_one": lambda led: led.reset("S", ["Box/INBOX/1/3"]),
    "prune": lambda led: led.prune("S", before=2e9, states=["done", "ignored"]),
}


# these read up to all entries of a source (or a state) in order: the index gives the order
SORTED = ("list", "list_state", "list_newest", "prune")


@pytest.mark.parametrize("name", list(CALLS))
def test_no_query_reads_every_entry_of_a_source(led, name):
    statements = _statements(led, lambda: CALLS[name](led))
    assert statements, f"{name} ran no statement"
    for sql, plan in zip(statements, _plans(led, statements), strict=False):
        # "SCAN mails" would read the whole table; a SEARCH through an index reads the
        # rows asked for (COVERING INDEX: not even those)
        assert "SCAN mails" not in plan, (sql, plan)
        if name in SORTED:  # a temporary B-tree would sort every match before the LIMIT
            assert "TEMP B-TREE" not in plan, (sql, plan)
        elif name != "counts":  # counting a source's entries reads its index entries
            # an index searched by the source alone reads all of the source's entries
            assert not any(" mails " in step and step.endswith("(source=?)")
                           for step in plan.split(" | ")), (sql, plan)
        if "mails" in sql and "FROM mails" in sql.replace("INTO mails", ""):
            assert "USING" in plan, (sql, plan)


def test_an_older_ledger_is_brought_to_the_current_version(tmp_path):
    path = tmp_path / "l.sqlite3"
    db = sqlite3.connect(str(path))
    db.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('version', '1');
        CREATE TABLE mails (
          source TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
          connection TEXT NOT NULL DEFAULT '', folder TEXT NOT NULL DEFAULT '',
          folder_version TEXT NOT NULL DEFAULT '', server_id TEXT NOT NULL DEFAULT '',
          reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, message_id TEXT, content_hash TEXT,
          subject TEXT, settled INTEGER NOT NULL DEFAULT 0, dup_of TEXT,
          created REAL NOT NULL, updated REAL NOT NULL, PRIMARY KEY (source, key));
        CREATE INDEX mails_state ON mails (source, state);
        CREATE INDEX mails_mid ON mails (source, message_id);
        CREATE TABLE folders (source TEXT NOT NULL, folder TEXT NOT NULL,
          version TEXT NOT NULL, PRIMARY KEY (source, folder));
        INSERT INTO mails (source, key, state, settled, created, updated)
          VALUES ('S', 'Box/INBOX/1/1', 'done', 1, 1.0, 1.0);
    """)
    db.close()
    ro = SqliteLedger(path=path, read_only=True)   # the console, before any run: no change
    try:
        assert ro.counts("S") == {"acquired": 0, "done": 1, "failed": 0, "ignored": 0}
    finally:
        ro.close()
    led = SqliteLedger(path=path)
    try:
        assert [e.key for e in led.entries("S")] == ["Box/INBOX/1/1"]
        assert led.counts("S") == {"acquired": 0, "done": 1, "failed": 0, "ignored": 0}
        led.set_folder_state("S", "INBOX", {"cursor": "1"})
        assert led.folder_state("S", "INBOX") == {"cursor": "1"}
    finally:
        led.close()
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("SELECT value FROM meta").fetchone() == (str(LEDGER_VERSION),)
        cols = [r[2] for r in db.execute("PRAGMA index_info(mails_state)")]
        assert cols == ["source", "state", "created"]
    finally:
        db.close()


def test_counts_kept_by_triggers_agree_with_counting(led):
    def counted() -> dict[str, int]:
        db = sqlite3.connect(str(led.path))
        try:
            rows = db.execute("SELECT state, COUNT(*) FROM mails WHERE source='S' "
                              "GROUP BY state").fetchall()
        finally:
            db.close()
        return {s: 0 for s in ("acquired", "done", "failed", "ignored")} | dict(rows)

    assert led.counts("S") == counted() and led.counts("S")["done"] > 100
    led.acquire("S", [place(i) for i in range(150, 260)])      # some again, some new
    led.finish("S", [Outcome(key=f"Box/INBOX/1/{i}", state="ignored", settled=True)
                     for i in range(250, 255)])
    led.reset("S", ["Box/INBOX/1/3", "Box/INBOX/1/201"])
    led.prune("S", before=2e9, states=["done"])
    assert led.counts("S") == counted()
    led.reset("S")
    assert led.counts("S") == counted() == {"acquired": 0, "done": 0, "failed": 0,
                                            "ignored": 0}
