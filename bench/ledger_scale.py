"""The ledger at ten million entries: how long each query of a round, of ``postline ledger``
and of the console takes, and how many bytes an entry costs.

    .venv/bin/python bench/ledger_scale.py                 # 10,000,000 entries (~3 GB, minutes)
    .venv/bin/python bench/ledger_scale.py --rows 1000000  # a quicker look

Fills a fresh ledger in a temp dir (schema from postline itself, the rows in one
transaction by executemany with the indexes built afterwards, as a bulk load does), then
times each query through the public ``SqliteLedger`` API: the median of ``--repeat`` runs,
on keys spread over the whole ledger (cold pages included). Target: every query < 100 ms.
Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from postline.state.ledger import Outcome, Place, SqliteLedger  # noqa: E402

SOURCE, CONN, FOLDER, VERSION = "Invoices", "Mailbox", "INBOX", "1700000000"
T0 = 1_700_000_000.0
TARGET_MS = 100.0


def key(uid: int) -> str:
    return f"{CONN}/{FOLDER}/{VERSION}/{uid}"


def rows(n: int, pending: int):
    """Entries as a long-running source leaves them: 97% done, 2% ignored (a tenth of them
    duplicates), 1% failed with a reason, the last ``pending`` still acquired; one mail
    every 3 s over the years, so ``updated`` spreads evenly."""
    for uid in range(1, n + 1):
        t = T0 + uid * 3.0
        r = uid % 100
        state = "failed" if r == 0 else "ignored" if r in (1, 2) else "done"
        if uid > n - pending:
            state = "acquired"
        yield (SOURCE, key(uid), state, CONN, FOLDER, VERSION, str(uid),
               "processor: KeyError: 'total' (at processors/invoices.py:12)"
               if state == "failed" else None,
               1, f"<{uid}.{uid * 7919 % 1000003}@mail.example.com>", None,
               f"Rechnung Nr. {uid} / invoice {uid}",
               int(state != "acquired"), key(uid - 1) if r == 2 else None, t, t)


def fill(path: Path, n: int, pending: int) -> float:
    """A ledger of ``n`` entries at ``path``; returns seconds taken."""
    t = time.perf_counter()
    SqliteLedger(path=path).close()   # the schema, at the current version
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    # indexes and the counting triggers are made again after the load, as a bulk load does
    kept = db.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', "
                      "'trigger') AND tbl_name='mails' AND sql IS NOT NULL").fetchall()
    for kind, name, _ in kept:
        db.execute(f"DROP {kind.upper()} {name}")
    db.execute("BEGIN")
    db.executemany("INSERT INTO mails VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   rows(n, pending))
    db.execute("INSERT INTO state_counts SELECT source, state, COUNT(*) FROM mails "
               "GROUP BY source, state")
    db.execute("COMMIT")
    for _, _, sql in kept:
        db.execute(sql)
    db.execute("INSERT INTO folders VALUES (?,?,?)", (SOURCE, FOLDER, VERSION))
    db.execute("INSERT INTO folder_state VALUES (?,?,'cursor',?)", (SOURCE, FOLDER, str(n)))
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return time.perf_counter() - t


def sizes(path: Path) -> dict[str, int]:
    """Bytes per table and index (dbstat), or just the file."""
    db = sqlite3.connect(str(path))
    try:
        return dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name "
                               "ORDER BY 2 DESC").fetchall())
    except sqlite3.Error:
        return {"(file)": path.stat().st_size}
    finally:
        db.close()


def timed(fn, repeat: int) -> float:
    """Median milliseconds of ``fn()`` (each call gets fresh arguments from ``fn``)."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def queries(led: SqliteLedger, n: int, rng: random.Random) -> list[tuple[str, object]]:
    """(what, callable) for every query a round, the CLI and the console run."""
    def some(k: int) -> list[int]:
        return [rng.randrange(1, n + 1) for _ in range(k)]

    counter = iter(range(n + 1, n + 10_000_000))

    def new_places(k: int) -> list[Place]:
        return [Place(key=key(u), connection=CONN, folder=FOLDER, folder_version=VERSION,
                      server_id=str(u)) for u in (next(counter) for _ in range(k))]

    def acquire_and_finish() -> None:
        places = new_places(50)
        led.acquire(SOURCE, places)
        led.finish(SOURCE, [Outcome(key=p.key, state="done", message_id=f"<{p.server_id}@n>",
                                    subject="new") for p in places])

    def reset_one() -> None:
        led.reset(SOURCE, [key(rng.randrange(1, n + 1))])

    return [
        ("round: folder state (cursor)", lambda: led.folder_state(SOURCE, FOLDER)),
        ("round: pending entries of the folder", lambda: led.pending(SOURCE, FOLDER)),
        ("round: look up 50 keys", lambda: led.get_many(SOURCE, [key(u) for u in some(50)])),
        ("round: duplicates of 50 Message-IDs", lambda: led.find_done_many(
            SOURCE, [f"<{u}.{u * 7919 % 1000003}@mail.example.com>" for u in some(50)])),
        ("round: acquire + finish 50 (2 commits)", acquire_and_finish),
        ("lookup: one key", lambda: led.get_many(SOURCE, [key(some(1)[0])])),
        ("ledger list --limit 100", lambda: led.entries(SOURCE, limit=100)),
        ("ledger list --state failed --limit 100",
         lambda: led.entries(SOURCE, state="failed", limit=100)),
        ("console: newest 100", lambda: led.entries(SOURCE, limit=100, newest_first=True)),
        ("ledger reset --id KEY", reset_one),
        ("prune: nothing old enough", lambda: led.prune(SOURCE, before=T0,
                                                         states=["done", "ignored"])),
        ("counts per state (console, /status)", lambda: led.counts(SOURCE)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dir", help="where the ledger goes (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the ledger file")
    args = ap.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="postline-ledger-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "ledger.sqlite3"
    if path.exists():
        print(f"reusing {path}")
    else:
        print(f"filling {args.rows:,} entries into {path} ...", flush=True)
        print(f"  {fill(path, args.rows, pending=20):.0f} s")
    try:
        size = path.stat().st_size
        print(f"\nfile {size / 1e6:,.0f} MB = {size / args.rows:.0f} bytes per entry")
        for name, b in sizes(path).items():
            print(f"  {name:28} {b / args.rows:6.0f} B/entry")
        # cold-ish: drop the file's pages from the page cache before timing
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        led = SqliteLedger(path=path)
        rng = random.Random(7)
        missed = []
        print(f"\n{'query':44} {'median ms':>10}")
        try:
            for what, fn in queries(led, args.rows, rng):
                ms = timed(fn, args.repeat)
                flag = "" if ms < TARGET_MS else "  over target"
                if flag:
                    missed.append(what)
                print(f"{what:44} {ms:10.2f}{flag}", flush=True)
            # prune for real: 0.1% of the entries old enough, in transactions of ~50 ms
            with led._rlock:
                (oldest,) = led._rdb.execute(
                    "SELECT updated FROM mails WHERE source=? AND +state='done' "
                    "ORDER BY updated LIMIT 1", (SOURCE,)).fetchone()
            before = oldest + args.rows // 1000 * 3.0
            txs: list[float] = []
            real_write = led._write

            def timed_write():
                import contextlib

                @contextlib.contextmanager
                def cm():
                    t0 = time.perf_counter()
                    with real_write() as db:
                        yield db
                    txs.append((time.perf_counter() - t0) * 1000)
                return cm()
            led._write = timed_write
            t = time.perf_counter()
            n = led.prune(SOURCE, before=before, states=["done", "ignored"])
            s = time.perf_counter() - t
            led._write = real_write
            worst = max(txs)
            if worst >= TARGET_MS:
                missed.append("prune transaction")
            print(f"{'prune: %d entries in %d transactions' % (n, len(txs)):44} "
                  f"{statistics.median(txs):10.2f}  (longest {worst:.0f} ms, {s:.2f} s in all)")
        finally:
            led.close()
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print("\ntarget: every query < 100 ms:", "met" if not missed else f"MISSED: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
