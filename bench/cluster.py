"""Fleet benchmark: postline run instances sharing sources through a postgresql StateStore.

    python bench/cluster.py [--mailboxes 12] [--mails 300] [--lease 5] [--stack-dir DIR]

Uses the dev stack (Dovecot and its PostgreSQL; ``postline dev-stack start`` or started
here). Fills ``--mailboxes`` fresh mailboxes with ``--mails`` small mails each (~5 KB;
mails stay in the INBOX, so every measurement reads them all again, each in a schema of its
own), then measures:

1. one instance, ``run --once``: SQLite state against the PostgreSQL StateStore (target:
   PostgreSQL at most 15% slower), after an untimed warm-up pass;
2. 1, 2 and 3 instances running together until the shared ledger has every mail: mails per
   second; again with each instance pinned to one core (``taskset``), since these machines
   have 2 cores and scaling past them measures the scheduler, not postline;
3. failover: two instances, ``lease_seconds: --lease``; one is SIGKILLed; the seconds until
   the other holds all its sources (target: under lease + two heartbeats).

Prints one line per measurement and a JSON summary at the end. Not a test: numbers vary
with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import psycopg

from _common import fill_maildir, fresh_user, start_stack


def small_mails(n: int, box: int) -> list[bytes]:
    out = []
    for i in range(n):
        m = EmailMessage()
        m["From"] = "bench@example.test"
        m["To"] = "reader@example.test"
        m["Subject"] = f"box {box} mail {i}"
        m["Message-ID"] = f"<cluster-{box}-{i}-{uuid.uuid4().hex}@example.test>"
        m.set_content(("Grüße aus dem Benchmark. " * 200)[:5000])
        out.append(m.as_bytes())
    return out


def write_project(root: Path, info, users, *, url: str | None, schema: str, lease: int
                  ) -> dict[str, str]:
    """The project (one source per mailbox, mails stay, JSONL sinks); returns its env."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = dict(os.environ)
    env.pop("POSTLINE_STATE_URL", None)
    env["POSTLINE_STATE_DIR"] = str(root / ".state")
    values = {}
    docs: list[dict] = []
    if url:
        docs.append({"kind": "StateStore", "name": "Shared", "type": "postgresql", "url": url,
                     "schema": schema, "lease_seconds": lease})
    for i, user in enumerate(users):
        env[f"BENCH_PW_{i}"] = user.password
        values[f"pw{i}"] = f"env:BENCH_PW_{i}"
        docs += [
            {"kind": "EmailConnection", "name": f"Box{i}",
             "incoming": {"protocol": "imap", "host": info.host, "port": info.ports["imap"],
                          "security": "none", "user": user.email,
                          "credential": {"type": "secret", "secret": f"Creds.pw{i}"}}},
            {"kind": "EmailSource", "name": f"Src{i}", "connection": f"Box{i}",
             "polling": {"interval": 3600}},
            {"kind": "Workflow", "name": f"Flow{i}", "source": f"Src{i}",
             "sinks": [{"type": "jsonl", "path": f"out/box{i}.jsonl"}]}]
    docs.insert(0, {"kind": "Secret", "name": "Creds", "values": values})
    (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    return env


def start(root: Path, env: dict, name: str, *, once: bool = False, cpu: int | None = None
          ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "postline", "run", str(root), "--instance", name]
    if once:
        cmd.append("--once")
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(root / f"{name}.log", "ab"))


def done_count(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            return conn.execute(f"SELECT count(*) FROM {schema}.mails WHERE "
                                f"state='done'").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mailboxes", type=int, default=12)
    ap.add_argument("--mails", type=int, default=300)
    ap.add_argument("--lease", type=int, default=5)
    ap.add_argument("--stack-dir")
    args = ap.parse_args()
    info = start_stack(args.stack_dir)
    if not info.postgres_url:
        print("the dev stack has no PostgreSQL (start it with: postline dev-stack start)")
        return 1
    url = info.postgres_url
    users = [fresh_user(info, f"cluster{i}") for i in range(args.mailboxes)]
    for i, u in enumerate(users):
        fill_maildir(info, u, small_mails(args.mails, i))
    total = args.mailboxes * args.mails
    work = Path(tempfile.mkdtemp(prefix="postline-bench-cluster-"))
    results: dict = {"mailboxes": args.mailboxes, "mails": total, "cpus": os.cpu_count()}

    # 1. one instance, --once: SQLite against PostgreSQL (after an untimed pass that lets
    # Dovecot read every mail once: the first reader would pay for its cold caches)
    for label, store in (("warm-up", None), ("sqlite", None), ("postgresql", url)):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        env = write_project(work / label, info, users, url=store, schema=schema,
                            lease=args.lease)
        t0 = time.perf_counter()
        p = start(work / label, env, "one", once=True)
        p.wait()
        secs = time.perf_counter() - t0
        if label == "warm-up":
            continue
        results[f"once_{label}_s"] = round(secs, 2)
        print(f"1 instance, --once, {label}: {total} mails in {secs:.2f} s "
              f"({total / secs:.0f} mails/s)")
    slower = results["once_postgresql_s"] / results["once_sqlite_s"] - 1
    results["postgresql_slower_pct"] = round(100 * slower, 1)
    print(f"PostgreSQL against SQLite: {100 * slower:+.1f}% (target: at most +15%)")

    # 2. 1, 2, 3 instances together, unpinned and pinned
    for pinned in (False, True):
        for n in (1, 2, 3):
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            root = work / f"fleet{n}{'p' if pinned else ''}"
            env = write_project(root, info, users, url=url, schema=schema, lease=args.lease)
            t0 = time.perf_counter()
            procs = [start(root, env, f"i{k}", cpu=(k % (os.cpu_count() or 1)) if pinned
                           else None) for k in range(n)]
            ok = wait(lambda: done_count(url, schema) >= total, 600)
            secs = time.perf_counter() - t0
            stop(procs)
            key = f"instances_{n}{'_pinned' if pinned else ''}_mails_per_s"
            results[key] = round(total / secs, 1) if ok else None
            print(f"{n} instance(s){' pinned' if pinned else ''}: {total} mails in "
                  f"{secs:.2f} s ({total / secs:.0f} mails/s, start-up included)"
                  + ("" if ok else " TIMED OUT"))

    # 3. failover after SIGKILL
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    root = work / "failover"
    env = write_project(root, info, users, url=url, schema=schema, lease=args.lease)
    procs = [start(root, env, "a"), start(root, env, "b")]
    with psycopg.connect(url, autocommit=True) as conn:
        def owners() -> dict[str, str]:
            try:
                return dict(conn.execute(f"SELECT source, owner FROM {schema}.leases WHERE "
                                         "owner IS NOT NULL AND expires_at > now()"))
            except psycopg.errors.UndefinedTable:
                return {}
        wait(lambda: len(owners()) == args.mailboxes and
             set(owners().values()) == {"a", "b"}, 120)
        wait(lambda: done_count(url, schema) >= total, 600)
        os.kill(procs[0].pid, signal.SIGKILL)
        t0 = time.perf_counter()
        ok = wait(lambda: set(owners().values()) == {"b"} and
                  len(owners()) == args.mailboxes, 120)
        secs = time.perf_counter() - t0
    stop(procs)
    heartbeat = args.lease / 3
    results["failover_s"] = round(secs, 2) if ok else None
    results["failover_target_s"] = round(args.lease + 2 * heartbeat, 2)
    print(f"failover after SIGKILL (lease {args.lease} s, heartbeat {heartbeat:.2f} s): "
          f"{secs:.2f} s (target: under {args.lease + 2 * heartbeat:.2f} s)")
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
