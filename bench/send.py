"""bench/send: 2,000 mails of about 5 KB through EmailService.Send into Postfix's smtp-sink.

Run: ``python bench/send.py [--mails 2000] [--threads 16] [--runs 3]`` (or ``make bench``).

Starts its own ``smtp-sink`` on a free port of 127.0.0.1 (``smtp-sink [-u nobody] -4
127.0.0.1:PORT 256``; it offers PIPELINING but not CHUNKING), then times, in each run:

* ``smtp-source -s 4 -m N -l 5000``: Postfix's C load generator, 4 sessions (the practical
  limit of this machine). Reference for the "33% of smtp-source" target.
* smtplib over one connection, building each mail with ``email.message.EmailMessage`` and
  sending it with ``send_message``, as a user would write it. Reference for the "3x the
  smtplib loop" target.
* smtplib over one connection sending one pre-built ``bytes`` mail N times (no building at
  all: shown for transparency, it is not what a user's loop does).
* postline ``Send``: the user's code builds each EmailMessage dict (``From``, ``To``,
  ``Subject``, ``Body``) and calls ``Send`` from a pool of ``--threads`` threads; timed from
  the first dict to the last result.
* postline ``asend``: the same dicts, ``asyncio.gather`` of ``asend`` on one event loop.

postline: no throttle, ``max_connections`` 4 (the default), the service opened and its
first session connected before the clock starts (a long-running pipeline). Every result is
checked to be a 250 reply. With ``--runs`` > 1 each row is the median of the runs.

Prints one table: seconds, msgs/s, speed-up over the smtplib EmailMessage loop and share of
smtp-source's rate, then PASS/FAIL of both postline rows against both targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import postline  # noqa: E402
from postline.service import open_service  # noqa: E402
from postline.testing.ports import port_open, wait_until  # noqa: E402

LINE = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n"
BODY = LINE * 62  # ~5 KB, like smtp-source -l 5000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink() -> tuple[subprocess.Popen, int]:
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    port = free_port()
    args = [exe, "-4", f"127.0.0.1:{port}", "256"]
    if os.geteuid() == 0:
        args[1:1] = ["-u", "nobody"]
    proc = subprocess.Popen(args)
    if not wait_until(lambda: port_open(port), timeout=10):
        proc.kill()
        raise SystemExit("smtp-sink did not start")
    return proc, port


def message(i: int) -> dict:
    return {"From": "Bench <bench@example.test>", "To": [{"Address": "sink@example.test"}],
            "Subject": f"bench mail {i}", "Body": BODY}


def bench_smtp_source(port: int, n: int) -> float:
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    t = time.perf_counter()
    subprocess.run([exe, "-s", "4", "-m", str(n), "-l", "5000", f"127.0.0.1:{port}"],
                   check=True)
    return time.perf_counter() - t


def bench_smtplib(port: int, n: int, *, build: bool) -> float:
    prebuilt = build_email(0).as_bytes()
    t = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(n):
            if build:
                smtp.send_message(build_email(i))
            else:
                smtp.sendmail("bench@example.test", ["sink@example.test"], prebuilt)
    return time.perf_counter() - t


def build_email(i: int) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "Bench <bench@example.test>"
    m["To"] = "sink@example.test"
    m["Subject"] = f"bench mail {i}"
    m.set_content(BODY)
    return m


def bench_postline(port: int, n: int, *, mode: str, threads: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="postline-bench-"))
    (root / "assets.yaml").write_text(
        "kind: EmailConnection\nname: Sink\noutgoing:\n  protocol: smtp\n  host: 127.0.0.1\n"
        f"  port: {port}\n  security: none\n---\n"
        "kind: EmailService\nname: Bench\nconnection: Sink\n")
    os.environ["POSTLINE_STATE_DIR"] = str(root / "state")
    svc = open_service(postline.open_project(root), "Bench")
    try:
        svc.Send(message(-1))  # open the first session outside the timing, like a warm service
        t = time.perf_counter()
        if mode == "threads":
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(svc.Send, (message(i) for i in range(n))))
        else:
            async def run():
                return await asyncio.gather(*(svc.asend(message(i)) for i in range(n)))
            results = asyncio.run(run())
        elapsed = time.perf_counter() - t
        assert len(results) == n and all(r.server_reply.startswith("250") for r in results)
        return elapsed
    finally:
        svc.close()
        shutil.rmtree(root, ignore_errors=True)


def one_run(port: int, n: int, threads: int) -> list[tuple[str, float]]:
    return [
        ("smtp-source -s 4 (C, the ceiling)", bench_smtp_source(port, n)),
        ("smtplib, EmailMessage per mail (1 conn)", bench_smtplib(port, n, build=True)),
        ("smtplib, pre-built bytes (1 conn)", bench_smtplib(port, n, build=False)),
        (f"postline Send, {threads} threads", bench_postline(port, n, mode="threads",
                                                             threads=threads)),
        ("postline asend, 1 asyncio loop", bench_postline(port, n, mode="async", threads=0)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs (default 3)")
    args = ap.parse_args(argv)
    n = args.mails
    sink, port = start_sink()
    try:
        runs = []
        for i in range(args.runs):
            runs.append(one_run(port, n, args.threads))
            print(f"run {i + 1}: " + ", ".join(f"{s:.2f}s" for _, s in runs[-1]),
                  file=sys.stderr)
    finally:
        sink.terminate()
        sink.wait(5)
    rows = [(name, statistics.median(r[i][1] for r in runs))
            for i, (name, _) in enumerate(runs[0])]
    source_s, smtplib_s = rows[0][1], rows[1][1]
    what = f"median of {args.runs} runs" if args.runs > 1 else "1 run"
    print(f"\n{n} mails of ~5 KB to smtp-sink on 127.0.0.1 ({what}, {os.cpu_count()} CPUs)\n")
    print(f"{'sender':42} {'seconds':>8} {'msgs/s':>8} {'vs smtplib':>11} {'% source':>9}")
    for name, sec in rows:
        print(f"{name:42} {sec:8.2f} {n / sec:8.0f} {smtplib_s / sec:10.2f}x "
              f"{100 * source_s / sec:8.0f}%")
    print("\ntargets: >= 3x the smtplib EmailMessage loop, >= 33% of smtp-source's rate")
    ok = True
    for name, sec in rows[3:]:
        fast, near = smtplib_s / sec >= 3, source_s / sec >= 0.33
        ok = ok and fast and near
        print(f"  {name:40} {'PASS' if fast else 'FAIL'} {smtplib_s / sec:5.2f}x   "
              f"{'PASS' if near else 'FAIL'} {100 * source_s / sec:3.0f}%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
