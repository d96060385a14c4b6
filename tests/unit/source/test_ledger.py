"""Ledger states, durability settings, duplicates, resets."""

from __future__ import annotations

import sqlite3

from postline.state.ledger import Outcome, Place, SqliteLedger, done_by_message_id_sql


def place(uid: str, version: str = "1") -> Place:
    return Place(key=f"Box/INBOX/{version}/{uid}", connection="Box", folder="INBOX",
                 folder_version=version, server_id=uid)


def test_wal_and_full_sync(tmp_path):
    led = SqliteLedger(path=tmp_path / "l.sqlite3")
    assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert led._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    led.close()


def test_states_attempts_and_settling(tmp_path):
    led = SqliteLedger(path=tmp_path / "l.sqlite3")
    assert led.acquire("S", [place("1"), place("2")]) == {"Box/INBOX/1/1": 1, "Box/INBOX/1/2": 1}
    assert led.acquire("S", [place("1")]) == {"Box/INBOX/1/1": 2}
    led.finish("S", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<a@x>"),
                     Outcome(key="Box/INBOX/1/2", state="failed", reason="sink: boom")])
    got = led.get_many("S", ["Box/INBOX/1/1", "Box/INBOX/1/2", "nope"])
    assert {k: (e.state, e.attempts, e.settled) for k, e in got.items()} == {
        "Box/INBOX/1/1": ("done", 2, False), "Box/INBOX/1/2": ("failed", 1, False)}
    assert got["Box/INBOX/1/1"].folder == "INBOX"     # place survives finish
    led.mark_settled("S", ["Box/INBOX/1/1"])
    assert led.get_many("S", ["Box/INBOX/1/1"])["Box/INBOX/1/1"].settled
    assert [e.key for e in led.entries("S", state="failed")] == ["Box/INBOX/1/2"]
    assert led.entries("other") == []
    led.close()
    # durable: a new connection sees it all
    led2 = SqliteLedger(path=tmp_path / "l.sqlite3")
    assert len(led2.entries("S")) == 2
    led2.close()


def test_find_done_and_reset_with_duplicates(tmp_path):
    led = SqliteLedger(path=tmp_path / "l.sqlite3")
    led.acquire("S", [place("1"), place("9", "2")])
    led.finish("S", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<m@x>"),
                     Outcome(key="Box/INBOX/2/9", state="ignored", message_id="<m@x>",
                             dup_of="Box/INBOX/1/1")])
    assert led.find_done("S", "<m@x>").key == "Box/INBOX/1/1"
    assert led.find_done("S", "<other@x>") is None
    assert led.reset("S", ["Box/INBOX/1/1"]) == 2   # the duplicate goes with it
    assert led.entries("S") == []
    led.acquire("S", [place("3")])
    led.set_folder_version("S", "INBOX", "1")
    assert led.reset("S") == 1 and led.folder_version("S", "INBOX") is None
    led.close()


def test_unopenable_ledger_is_a_config_error(tmp_path):
    import pytest

    from postline.errors import ConfigError
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(ConfigError, match="ledger .* cannot be opened"):
        SqliteLedger(path=tmp_path / "dir.sqlite3")
    _ = sqlite3


def test_a_ledger_from_a_newer_postline_is_refused(tmp_path):
    import sqlite3

    import pytest

    from postline.errors import ConfigError
    from postline.state.ledger import LEDGER_VERSION, SqliteLedger

    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path=path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value=? WHERE name='version'", (str(LEDGER_VERSION + 1),))
    with pytest.raises(ConfigError, match="written by a newer postline"):
        SqliteLedger(path=path)


def test_find_done_many_gives_the_oldest_done_entry_per_identity(tmp_path):
    led = SqliteLedger(path=tmp_path / "l.sqlite3", clock=iter(range(100)).__next__)
    led.acquire("S", [place("1"), place("2"), place("3"), place("4")])
    led.finish("S", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<a@x>")])
    led.finish("S", [Outcome(key="Box/INBOX/1/2", state="done", message_id="<a@x>"),
                     Outcome(key="Box/INBOX/1/3", state="failed", message_id="<b@x>"),
                     Outcome(key="Box/INBOX/1/4", state="done", message_id="<c@x>")])
    found = led.find_done_many("S", ["<a@x>", "<b@x>", "<c@x>", "<a@x>", "<none@x>"])
    assert {k: e.key for k, e in found.items()} == {"<a@x>": "Box/INBOX/1/1",
                                                    "<c@x>": "Box/INBOX/1/4"}
    assert found["<a@x>"] == led.find_done("S", "<a@x>")
    assert led.find_done_many("other", ["<a@x>"]) == {}
    led.close()


def test_duplicate_lookups_use_the_message_id_index(tmp_path):
    # By the state index SQLite would scan every done entry of the source for each
    # lookup: fine in a test, minutes per round in a ledger of a million mails.
    led = SqliteLedger(path=tmp_path / "l.sqlite3")
    led.acquire("S", [place(str(i)) for i in range(300)])
    led.finish("S", [Outcome(key=f"Box/INBOX/1/{i}", state="done", message_id=f"<{i}@x>")
                     for i in range(300)])
    plan = " ".join(str(row) for row in led._db.execute(
        "EXPLAIN QUERY PLAN " + done_by_message_id_sql(2), ("S", "<1@x>", "<2@x>")))
    assert "mails_mid" in plan
    led.close()


def test_prune_forgets_only_old_settled_entries_of_the_asked_states_in_chunks(tmp_path):
    clock = [1000.0]
    led = SqliteLedger(path=tmp_path / "l.sqlite3", clock=lambda: clock[0])
    led.PRUNE_CHUNK = 3                     # several transactions
    old = [place(str(i)) for i in range(8)]
    led.acquire("S", old)
    led.finish("S", [Outcome(key=p.key, state="done") for p in old[:5]] +
               [Outcome(key=old[5].key, state="ignored"), Outcome(key=old[6].key,
                                                                  state="failed")])
    led.mark_settled("S", [p.key for p in old[:7] if p is not old[4]])   # 4: not moved yet
    clock[0] = 5000.0
    new = place("100")
    led.acquire("S", [new])
    led.finish("S", [Outcome(key=new.key, state="done")])
    led.mark_settled("S", [new.key])
    led.acquire("T", [place("1")])
    led.finish("T", [Outcome(key="Box/INBOX/1/1", state="done")])
    led.mark_settled("T", ["Box/INBOX/1/1"])

    assert led.prune("S", before=2000.0, states=["done", "ignored", "acquired"]) == 5
    left = {e.key: e.state for e in led.entries("S")}
    assert left == {old[4].key: "done", old[6].key: "failed", old[7].key: "acquired",
                    new.key: "done"}
    assert len(led.entries("T")) == 1       # other sources untouched
    assert led.prune("S", before=2000.0, states=[]) == 0
    led.close()
