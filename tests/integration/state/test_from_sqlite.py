"""``postline state migrate --from-sqlite``: an installation's SQLite state copied into
PostgreSQL, idempotent, with counts."""

from __future__ import annotations

import json

import postline
from postline.cli import main
from postline.state.ledger import Outcome, Place, SqliteLedger
from postline.state.outbox import Outbox
from postline.state.stores import open_ledger, open_outbox


def _place(uid: str) -> Place:
    return Place(key=f"Box/INBOX/1/{uid}", connection="Box", folder="INBOX",
                 folder_version="1", server_id=uid)


def test_copies_ledger_outbox_and_token_caches_once(store_project, tmp_path, capsys):
    root = store_project()
    old = tmp_path / "old-state"
    led = SqliteLedger(path=old / "ledger.sqlite3")
    led.acquire("Src", [_place("1"), _place("2")])
    led.finish("Src", [Outcome(key="Box/INBOX/1/1", state="done", message_id="<a@x>")])
    led.mark_settled("Src", ["Box/INBOX/1/1"])
    led.set_folder_state("Src", "INBOX", {"cursor": "2"})
    led.set_folder_version("Src", "INBOX", "1")
    led.close()
    box = Outbox(old / "outbox.sqlite")
    box.enqueue(service="Notify", message={"Subject": "hi"}, message_id="<m1@x>", date="d",
                summary="hi", limit=10)
    second = box.enqueue(service="Notify", message={"Subject": "ho"}, message_id="<m2@x>",
                         date="d", summary="ho", limit=10)
    box.mark(second, "sending")            # the old process stopped in DATA
    box.close()
    (old / "tokens").mkdir()
    (old / "tokens" / "Box-incoming.bin").write_text("sealed-bytes\n")

    assert main(["state", "migrate", str(root), "--from-sqlite", str(old)]) == 0
    out = capsys.readouterr().out
    assert "ledger entries: 2 copied, 0 already there" in out
    assert "folder versions and cursors: 2 copied, 0 already there" in out
    assert "outbox mails: 2 copied, 0 already there" in out
    assert "token caches: 1 copied, 0 already there" in out
    assert main(["state", "migrate", str(root), "--from-sqlite", str(old), "--json"]) == 0
    copied = json.loads(capsys.readouterr().out)["copied"]
    assert copied["ledger"] == {"found": 2, "copied": 0}       # idempotent
    assert copied["outbox"] == {"found": 2, "copied": 0}

    project = postline.open_project(root)
    pg = open_ledger(project)
    try:
        got = pg.get_many("Src", ["Box/INBOX/1/1", "Box/INBOX/1/2"])
        assert (got["Box/INBOX/1/1"].state, got["Box/INBOX/1/1"].settled) == ("done", True)
        assert got["Box/INBOX/1/2"].state == "acquired"
        assert pg.folder_state("Src", "INBOX") == {"cursor": "2"}
        assert pg.folder_version("Src", "INBOX") == "1"
    finally:
        pg.close()
    ob = open_outbox(project)
    try:
        states = {e.message_id: e.state for e in ob.list("Notify")}
        assert states == {"<m1@x>": "queued", "<m2@x>": "unknown"}   # never resent
    finally:
        ob.close()


def test_a_missing_directory_is_one_line(store_project, tmp_path, capsys):
    root = store_project()
    assert main(["state", "migrate", str(root), "--from-sqlite", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope is not a directory" in err
