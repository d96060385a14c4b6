"""SendAndForget survives a SIGKILL: queued mails are sent after a restart, and sent once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from postline.testing.waits import eventually

CHILD = Path(__file__).with_name("outbox_child.py")


def wait_for(cond, timeout=20.0):
    eventually(cond, timeout, "the outbox")


def states(db: Path) -> dict[str, str]:
    """message_id -> state; empty while the child has not created the outbox yet."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db) as c:
            return dict(c.execute("SELECT message_id, state FROM outbox").fetchall())
    except sqlite3.OperationalError:
        return {}


def test_queued_mails_survive_sigkill_and_are_sent_exactly_once(tmp_path):
    records = tmp_path / "server-records.txt"
    db = tmp_path / "state" / "outbox.sqlite"
    child = subprocess.Popen([sys.executable, str(CHILD), str(tmp_path), "enqueue", "20", "5"],
                             stdout=subprocess.PIPE, text=True)
    try:
        # the child queued 20 mails, the server took 5, the 6th is "in DATA"
        wait_for(lambda: len(states(db)) == 20 and records.exists()
                 and len(records.read_text().split()) == 5
                 and "sending" in states(db).values())
        assert child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    before = states(db)
    assert Counter(before.values()) == {"sent": 5, "sending": 1, "queued": 14}

    out = subprocess.run([sys.executable, str(CHILD), str(tmp_path), "drain"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == {"queued": 0, "sending": 0, "sent": 19, "failed": 0, "unknown": 1}

    delivered = Counter(records.read_text().split())
    assert all(n == 1 for n in delivered.values()), "a mail was sent twice"
    after = states(db)
    unknown = [mid for mid, st in after.items() if st == "unknown"]
    assert unknown == [mid for mid, st in before.items() if st == "sending"]
    assert unknown[0] not in delivered                 # the interrupted one was not resent
    assert set(delivered) == {mid for mid, st in after.items() if st == "sent"}
    assert len(delivered) == 19
