"""The ledger's behaviour on both engines: SQLite (the default) and PostgreSQL (a
StateStore), through the Ledger interface only, so the two cannot drift apart."""

from __future__ import annotations

import pytest

from postline.state.ledger import Outcome, Place, SqliteLedger


def place(uid: str, version: str = "1") -> Place:
    return Place(key=f"Box/INBOX/{version}/{uid}", connection="Box", folder="INBOX",
                 folder_version=version, server_id=uid)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_ledger(request, tmp_path):
    """``make_ledger(clock=None) -> Ledger`` of the engine under test (each call: a new
    handle on the same ledger)."""
    opened = []

    if request.param == "sqlite":
        def make(clock=None):
            led = SqliteLedger(path=tmp_path / "l.sqlite3", **({"clock": clock} if clock
                                                                else {}))
            opened.append(led)
            return led
    else:
        project = request.getfixturevalue("store_project")()
        import postline
        from postline.state.stores import open_ledger

        def make(clock=None):
            led = open_ledger(postline.open_project(project))
            if clock:
                led._clock = clock
            opened.append(led)
            return led
    yield make
    for led in opened:
        led.close()


def test_states_attempts_and_settling(make_ledger):
    led = make_ledger()
    assert led.acquire("S", [place("1"), place("2")]) == {"Box/INBOX/1/1": 1, "Box/INBOX/1/2": 1}
    assert led.acquire("S", [place("1")]) == {"Box/INBOX/1/1": 2}
    led.finish("S", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<a@x>"),
                     Outcome(key="Box/INBOX/1/2", state="failed", reason="sink: boom")])
    got = led.get_many("S", ["Box/INBOX/1/1", "Box/INBOX/1/2", "nope"])
    assert {k: (e.state, e.attempts, e.settled) for k, e in got.items()} == {
        "Box/INBOX/1/1": ("done", 2, False), "Box/INBOX/1/2": ("failed", 1, False)}
    assert got["Box/INBOX/1/1"].folder == "INBOX"
    assert led.states("S", ["Box/INBOX/1/1", "x"]) == {"Box/INBOX/1/1": ("done", False)}
    assert [e.key for e in led.pending("S", "INBOX")] == ["Box/INBOX/1/1", "Box/INBOX/1/2"]
    led.mark_settled("S", ["Box/INBOX/1/1"])
    assert led.get_many("S", ["Box/INBOX/1/1"])["Box/INBOX/1/1"].settled
    assert [e.key for e in led.pending("S", "INBOX")] == ["Box/INBOX/1/2"]
    assert [e.key for e in led.entries("S", state="failed")] == ["Box/INBOX/1/2"]
    assert led.counts("S") == {"acquired": 0, "done": 1, "failed": 1, "ignored": 0}
    assert led.entries("other") == []
    led.close()
    assert len(make_ledger().entries("S")) == 2      # durable: a new handle sees it all


def test_finish_and_acquire_in_one_call(make_ledger):
    led = make_ledger()
    led.acquire("S", [place("1")])
    assert led.finish_and_acquire("S", [Outcome(key="Box/INBOX/1/1", state="done")],
                                  [place("2"), place("1")]) == {"Box/INBOX/1/2": 1,
                                                                "Box/INBOX/1/1": 2}


def test_find_done_and_reset_with_duplicates(make_ledger):
    led = make_ledger()
    led.acquire("S", [place("1"), place("9", "2")])
    led.finish("S", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<m@x>",
                             fingerprint="f1"),
                     Outcome(key="Box/INBOX/2/9", state="ignored", message_id="<m@x>",
                             dup_of="Box/INBOX/1/1")])
    assert led.find_done("S", "<m@x>").key == "Box/INBOX/1/1"
    assert led.find_done("S", "<other@x>") is None
    assert [e.fingerprint for e in led.done_entries("S", ["<m@x>"])["<m@x>"]] == ["f1"]
    assert led.reset("S", ["Box/INBOX/1/1"]) == 2
    assert led.entries("S") == []
    assert "rescan_at" in led.folder_state("S", "INBOX") or \
        led.folder_state("S", "INBOX") == {}   # no folder known yet: nothing to rescan
    led.acquire("S", [place("3")])
    led.set_folder_version("S", "INBOX", "1")
    assert led.folder_version("S", "INBOX") == "1"
    assert led.reset("S") == 1 and led.folder_version("S", "INBOX") is None


def test_folder_state_set_and_removed_and_reset_asks_for_a_rescan(make_ledger):
    led = make_ledger(clock=lambda: 1234.5)
    led.set_folder_state("S", "INBOX", {"cursor": "17", "cursor_version": "1"})
    assert led.folder_state("S", "INBOX") == {"cursor": "17", "cursor_version": "1"}
    led.set_folder_state("S", "INBOX", {"cursor": "20", "cursor_version": None})
    assert led.folder_state("S", "INBOX") == {"cursor": "20"}
    assert led.folder_state("T", "INBOX") == {}
    led.reset("S", ["nothing"])
    assert led.folder_state("S", "INBOX") == {"cursor": "20", "rescan_at": "1234.5"}


def test_find_done_many_gives_the_oldest_done_entry_per_identity(make_ledger):
    led = make_ledger(clock=iter(range(100)).__next__)
    led.acquire("S", [place("1"), place("2"), place("3"), place("4")])
    led.finish("S", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<a@x>")])
    led.finish("S", [Outcome(key="Box/INBOX/1/2", state="done", message_id="<a@x>"),
                     Outcome(key="Box/INBOX/1/3", state="failed", message_id="<b@x>"),
                     Outcome(key="Box/INBOX/1/4", state="done", message_id="<c@x>")])
    found = led.find_done_many("S", ["<a@x>", "<b@x>", "<c@x>", "<a@x>", "<none@x>"])
    assert {k: e.key for k, e in found.items()} == {"<a@x>": "Box/INBOX/1/1",
                                                    "<c@x>": "Box/INBOX/1/4"}
    assert led.find_done_many("S", ["<a@x>"], newest=True)["<a@x>"].key == "Box/INBOX/1/2"
    assert found["<a@x>"] == led.find_done("S", "<a@x>")
    assert led.find_done_many("other", ["<a@x>"]) == {}


def test_prune_forgets_only_old_settled_entries_of_the_asked_states(make_ledger):
    clock = [1000.0]
    led = make_ledger(clock=lambda: clock[0])
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
    assert len(led.entries("T")) == 1
    assert led.prune("S", before=2000.0, states=[]) == 0
    assert [e.key for e in led.entries("S", newest_first=True, limit=1)] == [new.key]
