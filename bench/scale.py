"""Rounds over big folders: does a round cost what is new, not what is old?

    .venv/bin/python bench/scale.py                        # 10,000 and 100,000 mails (IMAP)
    .venv/bin/python bench/scale.py --sizes 10000,100000,1000000 --pop3 100000

For each size a fresh mailbox of the local stack is filled with that many small mails by
writing Maildir files straight into Dovecot's mail location (then one SELECT makes Dovecot
index them, timed apart), and a project reads it with ``folders.done: ""`` (every mail stays
where it is: the case of shared and archive mailboxes). Timed, each in a fresh process
(``postline run --once``'s work: project, connection, round, commit; not the interpreter's
start-up; the round itself, from opening the folder to the last commit): the first round (every mail processed), idle rounds (nothing new; the median of
``--idle`` rounds), the same idle round with ``polling.full_scan: 0`` (what every round cost
before: the whole folder listed), and a round with 10 new mails, with the number of mails
fetched, the CPU time of the runner's thread (postline's own work; the rest of a round is
waiting for the server) and the peak RSS of each round (the kernel's high-water mark, reset as the round
begins; the process's other memory, e.g. the JSONL sink's index of the keys it holds, is
reported apart). The 10 new mails are delivered over LMTP. An empty mailbox gives the
baseline.

Targets: an idle round over the biggest folder <= the empty folder's round + 50 ms; 10 new
mails -> 10 fetched; the idle round's RSS does not grow with the folder. ``--pop3 N`` also
reports N mails over POP3 (UIDL lists everything: no incremental rounds there).
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, fresh_user, start_stack

MAIL = ("From: Sender {s} <sender{s}@example.test>\r\nTo: archive@example.test\r\n"
        "Subject: Report {i} / Bericht {i}\r\nDate: Wed, 01 May 2024 12:00:00 +0000\r\n"
        "Message-ID: <scale-{tag}-{i}@example.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Line one of report {i}.\r\nAll green, nothing to do.\r\n")


def fill(maildir: Path, start: int, n: int, tag: str) -> float:
    """``n`` small mails written as Maildir files into ``cur/`` (seconds)."""
    t = time.perf_counter()
    st = maildir.stat()
    cur = maildir / "cur"
    stamp = int(time.time())
    for i in range(start, start + n):
        raw = MAIL.format(i=i, s=i % 37, tag=tag).encode()
        path = cur / f"{stamp}.M{i}P{os.getpid()}.scale,S={len(raw)}:2,"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, raw)
        os.fchown(fd, st.st_uid, st.st_gid)
        os.close(fd)
    return time.perf_counter() - t


def index(info, user) -> float:
    """Let Dovecot index what was written (one SELECT); seconds."""
    import imaplib

    t = time.perf_counter()
    with imaplib.IMAP4(info.host, info.ports["imap"]) as imap:
        imap.login(user.email, user.password)
        imap.select("INBOX")
        imap.logout()
    return time.perf_counter() - t


def project(root: Path, info, user, *, protocol: str, full_scan: str = "1d") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [
        {"kind": "Secret", "name": "Creds", "values": {"password": "env:BENCH_PASSWORD"}},
        {"kind": "EmailConnection", "name": "Bench",
         "incoming": {"protocol": protocol, "host": info.host, "port": info.ports[protocol],
                      "security": "starttls", "ca_file": str(info.ca_file),
                      "user": user.email, "read_timeout": 600,
                      "credential": {"type": "secret", "secret": "Creds.password"}}},
        {"kind": "EmailSource", "name": "Archive", "connection": "Bench",
         "folders": {"input": "INBOX", "done": ""}, "pop3": {"done": "keep"},
         "polling": {"interval": 3600, "idle": False, "timeout": 86400,
                     "full_scan": full_scan}},
        {"kind": "Workflow", "name": "ArchiveFlow", "source": "Archive",
         "sinks": [{"type": "jsonl", "path": "out/mails.jsonl"}]},
    ]
    (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    return root


# -- the child: rounds in one process, timed from inside ---------------------------------

def _status(field: str) -> int:
    """A size from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(project_dir: str, rounds: int) -> None:
    """Run ``rounds`` rounds (each a run_workflows(once=True), as ``run --once`` does);
    print JSON: seconds of each, mails fetched by each, peak RSS."""
    sys.path.insert(0, str(ROOT / "src"))
    import postline
    from postline.protocols import imap_ops, pop3_ops
    from postline.workflow.engine import run_workflows
    from postline.workflow.runner import WorkflowRunner

    # a round is timed from inside (run_workflows itself adds a process start for the
    # commit helper and joins its thread in 0.2 s steps)
    took = [0.0]
    real_round = WorkflowRunner.round

    peak = [0, 0]   # the round's peak RSS, the RSS when it began (bytes)
    cpu = [0.0]     # CPU seconds of the runner's thread in the round: postline's own work

    def timed_round(self, reader):
        # the kernel's high-water mark, reset at the round's start (clear_refs "5"), so
        # what the project, the sinks (the JSONL sink's key index) and the connection
        # hold before is told apart from what the round itself adds
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak[1] = _status("VmRSS")
        t, c = time.perf_counter(), time.thread_time()
        try:
            return real_round(self, reader)
        finally:
            took[0] += time.perf_counter() - t
            cpu[0] += time.thread_time() - c
            peak[0] = _status("VmHWM")
    WorkflowRunner.round = timed_round
    # the SELECT of each round timed apart: on a Maildir, Dovecot rereads the folder's
    # directory (~0.25 s per 100,000 files) whenever it cannot trust its mtime, e.g. just
    # after a delivery; that is the server's cost, not postline's
    selected = [0.0]
    from postline.protocols import imap as imap_mod

    real_open = imap_mod.ImapReader.open_folder

    def timed_open(self, *a, **kw):
        t = time.perf_counter()
        try:
            return real_open(self, *a, **kw)
        finally:
            selected[0] += time.perf_counter() - t
    imap_mod.ImapReader.open_folder = timed_open
    fetched = [0]
    for cls in (imap_ops.MailboxOperations, pop3_ops.MaildropOperations):
        real = cls.fetch

        def counting(self, refs, *a, _real=real, **kw):
            refs = list(refs)
            fetched[0] += len(refs)
            return _real(self, refs, *a, **kw)
        cls.fetch = counting
    out = []
    for _ in range(rounds):
        fetched[0], took[0], selected[0], cpu[0] = 0, 0.0, 0.0, 0.0
        summary = run_workflows(postline.open_project(project_dir), once=True)
        if summary.errors:
            raise SystemExit(f"run failed: {summary.errors}")
        out.append({"s": took[0], "fetched": fetched[0], "done": summary.counts.get("done", 0),
                    "run_s": summary.seconds, "round_rss": peak[0], "before_rss": peak[1],
                    "select_s": selected[0], "cpu_s": cpu[0]})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rounds": out, "rss": rss}))


def rounds(root: Path, user, n: int) -> dict:
    env = dict(os.environ, BENCH_PASSWORD=user.password,
               POSTLINE_STATE_DIR=str(root / ".state"))
    res = subprocess.run([sys.executable, __file__, "--child", str(root), str(n)], env=env,
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(info, work: Path, size: int, *, protocol: str, idle: int) -> dict:
    user = fresh_user(info, f"scale{size}{protocol}")
    maildir = info.mailbox_path(user.email)
    r: dict = {"size": size, "protocol": protocol}
    r["fill_s"] = fill(maildir, 0, size, "a")
    r["index_s"] = index(info, user)
    root = project(work / f"{protocol}-{size}", info, user, protocol=protocol)
    first = rounds(root, user, 1)
    print(f"  first round: {json.dumps(first)}", flush=True)
    r["first_s"], r["first_rss"] = first["rounds"][0]["s"], first["rounds"][0]["round_rss"]
    r["first_done"] = first["rounds"][0]["done"]
    idle_r = rounds(root, user, idle)
    print(f"  idle rounds: {json.dumps(idle_r)}", flush=True)
    r["idle_s"] = statistics.median(x["s"] for x in idle_r["rounds"])
    r["idle_select_s"] = statistics.median(x.get("select_s", 0) for x in idle_r["rounds"])
    r["idle_cpu_s"] = statistics.median(x.get("cpu_s", 0) for x in idle_r["rounds"])
    r["idle_fetched"] = max(x["fetched"] for x in idle_r["rounds"])
    # each round against the RSS it began with (each run opens the project and its sinks
    # again; what they hold is not the round's)
    worst = max(idle_r["rounds"], key=lambda x: x["round_rss"] - x["before_rss"])
    r["idle_rss"], r["idle_before"] = worst["round_rss"], worst["before_rss"]
    r["idle_process_rss"] = idle_r["rss"]
    if protocol == "imap":
        full = project(work / f"{protocol}-{size}-full", info, user, protocol=protocol,
                       full_scan="0")
        shutil.copytree(root / ".state", full / ".state")
        full_r = rounds(full, user, idle)
        print(f"  full listings: {json.dumps(full_r)}", flush=True)
        r["full_s"] = statistics.median(x["s"] for x in full_r["rounds"])
        r["full_rss"] = max(x["round_rss"] for x in full_r["rounds"])
    for i in range(10):   # new mail arrives as a server delivers it (LMTP)
        info.deliver(user.email, MAIL.format(i=size + i, s=i, tag="b").encode())
    new = rounds(root, user, 1)["rounds"][0]
    r["new_s"], r["new_fetched"], r["new_done"] = new["s"], new["fetched"], new["done"]
    r["new_select_s"] = new.get("select_s", 0)
    r["new_cpu_s"] = new.get("cpu_s", 0)
    return r


def mb(b: float) -> str:
    return f"{b / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--pop3", type=int, default=0, help="also N mails over POP3")
    ap.add_argument("--idle", type=int, default=5, help="idle rounds (median)")
    ap.add_argument("--stack-dir")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    info = start_stack(args.stack_dir)
    work = Path(tempfile.mkdtemp(prefix="postline-scale-"))
    results = []
    try:
        for size in [0] + [int(s) for s in args.sizes.split(",") if s]:
            print(f"IMAP, {size:,} mails ...", flush=True)
            results.append(measure(info, work, size, protocol="imap", idle=args.idle))
            print("  " + json.dumps(results[-1]), flush=True)
        if args.pop3:
            print(f"POP3, {args.pop3:,} mails ...", flush=True)
            results.append(measure(info, work, args.pop3, protocol="pop3", idle=args.idle))
            print("  " + json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'':16} {'fill+index':>11} {'first round':>18} {'idle round':>18} "
          f"{'full listing':>18} {'10 new: ms (SELECT; CPU) / fetched':>36}")
    for r in results:
        full = (f"{r['full_s'] * 1000:8.0f} ms {mb(r['full_rss']):>7}" if "full_s" in r
                else f"{'-':>18}")
        print(f"{r['protocol'].upper():5} {r['size']:>10,} {r['fill_s'] + r['index_s']:10.1f}s "
              f"{r['first_s']:9.1f} s {mb(r['first_rss']):>7} "
              f"{r['idle_s'] * 1000:8.0f} ms {mb(r['idle_rss']):>7} {full} "
              f"{r['new_s'] * 1000:10.0f} ms ({r.get('new_select_s', 0) * 1000:.0f}; "
              f"{r.get('new_cpu_s', 0) * 1000:.0f}) / "
              f"{r['new_fetched']}")
    imap = [r for r in results if r["protocol"] == "imap"]
    empty, big = imap[0], imap[-1]
    ok_idle = big["idle_s"] <= empty["idle_s"] + 0.050
    ok_new = all(r["new_fetched"] == 10 and r["new_done"] == 10 for r in results)
    ok_rss = big["idle_rss"] - big["idle_before"] <= empty["idle_rss"] - empty["idle_before"] + 5e6
    print(f"\nidle round over {big['size']:,} mails: {big['idle_s'] * 1000:.0f} ms, empty folder "
          f"{empty['idle_s'] * 1000:.0f} ms (target: + 50 ms at most): "
          f"{'met' if ok_idle else 'MISSED'}")
    print(f"10 new mails -> 10 fetched in every folder: {'met' if ok_new else 'MISSED'}")
    print(f"idle round's peak RSS {mb(big['idle_rss'])} ({mb(big['idle_before'])} before it) vs "
          f"{mb(empty['idle_rss'])} ({mb(empty['idle_before'])}) empty: "
          f"{'met' if ok_rss else 'MISSED'}")
    return 0 if ok_idle and ok_new and ok_rss else 1


if __name__ == "__main__":
    raise SystemExit(main())
