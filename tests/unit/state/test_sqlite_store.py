"""The one SQLite store helper (postline.state.sqlite) and the ledger and outbox on it: a
failed write names its real cause, read-only opens never write, chunks, versions."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from postline.errors import ConfigError, StorageError
from postline.state.ledger import LedgerState, Place, SqliteLedger
from postline.state.outbox import Outbox, OutboxState
from postline.state.paths import ledger_path, outbox_path, token_cache_path
from postline.state.sqlite import SqliteStore, chunks, migrate, stored_version


def _fill_disk(db: sqlite3.Connection) -> None:
    """The file may grow by two pages at most: what SQLite sees on a full disk
    (SQLITE_FULL, after which it has rolled the transaction back by itself)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages + 2}")


def _enqueue(outbox: Outbox, n: int = 50) -> None:
    for _ in range(n):
        outbox.enqueue(service="S", message={"text": "x" * 20000}, message_id="<m@x>",
                       date="Thu, 03 Dec 2026 10:00:00 +0000", summary="a@x | hi", limit=1000)


def test_a_full_disk_under_the_outbox_names_the_real_cause(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    _fill_disk(outbox._store.db)
    with pytest.raises(StorageError) as err:
        _enqueue(outbox)
    message = str(err.value)
    assert "database or disk is full" in message
    assert "cannot rollback" not in message
    assert f"cannot write the outbox {tmp_path / 'outbox.sqlite'}" in message
    assert "nothing was queued" in message
    # the outbox still answers, and nothing half-written is there
    assert outbox.counts("S")[OutboxState.SENDING] == 0
    outbox.close()


def test_a_full_disk_under_the_ledger_names_the_real_cause(tmp_path):
    led = SqliteLedger(path=tmp_path / "l.sqlite3")
    _fill_disk(led._db)
    places = [Place(key=f"B/INBOX/1/{i}", connection="B", folder="INBOX" * 200,
                    folder_version="1", server_id=str(i)) for i in range(500)]
    with pytest.raises(StorageError) as err:
        led.acquire("S", places)
    assert "database or disk is full" in str(err.value)
    assert "cannot rollback" not in str(err.value)
    assert led.counts("S")[LedgerState.ACQUIRED] == 0   # nothing of the batch was kept
    led.close()


def test_a_read_only_outbox_refuses_writes_naming_the_cause(tmp_path):
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    before = path.read_bytes()
    outbox = Outbox(path, read_only=True)
    with pytest.raises(StorageError, match="readonly database") as err:
        _enqueue(outbox, 1)
    assert "cannot rollback" not in str(err.value)
    assert outbox.counts("S") == {s: 0 for s in ("queued", "sending", "sent", "failed",
                                                 "unknown")}
    outbox.close()
    assert path.read_bytes() == before


def test_read_only_opens_create_nothing(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the outbox"):
        Outbox(tmp_path / "none.sqlite", read_only=True)
    with pytest.raises(ConfigError, match="ledger .* cannot be read"):
        SqliteLedger(path=tmp_path / "none.sqlite3", read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_files_are_private_wal_and_full_sync(tmp_path):
    store = SqliteStore.open(path=tmp_path / "d" / "x.sqlite", what="the test file")
    assert stat.S_IMODE((tmp_path / "d" / "x.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL
    store.close()


def test_a_failing_body_rolls_back_and_keeps_its_own_error(tmp_path):
    store = SqliteStore.open(path=tmp_path / "x.sqlite", what="the test file")
    with store.write() as db:
        db.execute("CREATE TABLE t (v)")
    with pytest.raises(KeyError), store.write() as db:
        db.execute("INSERT INTO t VALUES (1)")
        raise KeyError("mine")
    with store.read() as db:
        assert db.execute("SELECT COUNT(*) AS n FROM t").fetchone()["n"] == 0
    store.close()


def test_versions_live_in_the_meta_table_and_old_outboxes_keep_theirs(tmp_path):
    # an outbox of the first release: version 1 in PRAGMA user_version, no meta table
    old = sqlite3.connect(tmp_path / "outbox.sqlite")
    old.execute("PRAGMA user_version=1")
    old.close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite", isolation_level=None)
    assert stored_version(db) == 1
    calls = []
    assert migrate(db, version=2, upgrade=lambda d, found: calls.append(found)) == 1
    assert calls == [1] and stored_version(db) == 2
    assert migrate(db, version=2, upgrade=lambda d, found: calls.append(found)) == 2
    assert calls == [1]
    db.close()


def test_a_newer_outbox_is_refused(tmp_path):
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE meta SET value='9' WHERE name='version'")
    db.close()
    for read_only in (False, True):
        with pytest.raises(ConfigError, match="written by a newer postline .outbox version 9"):
            Outbox(path, read_only=read_only)


def test_chunks_cut_in_order():
    assert [list(c) for c in chunks(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []


def test_one_place_names_the_files(tmp_path):
    assert ledger_path(tmp_path) == tmp_path / "ledger.sqlite3"
    assert outbox_path(tmp_path) == tmp_path / "outbox.sqlite"
    assert token_cache_path(tmp_path, "My Box", "in") == tmp_path / "tokens" / "My_Box-in.bin"


def test_the_old_module_paths_still_import():
    from postline.locks import ProcessLock
    from postline.service.outbox import Outbox as OldOutbox
    from postline.source.ledger import STATES, Entry, Ledger, Outcome
    from postline.source.ledger import Place as OldPlace
    from postline.state.locks import ProcessLock as NewLock

    assert OldOutbox is Outbox and OldPlace is Place and ProcessLock is NewLock
    assert Entry and Ledger and Outcome
    assert list(STATES) == ["acquired", "done", "failed", "ignored"]
