"""bench/send: 2,000 mails of about 5 KB through EmailService.Send into Postfix's smtp-sink.

Run: ``python bench/send.py [--mails 2000] [--threads 16] [--mode threads|async]``.

Starts its own ``smtp-sink`` on a free port of 127.0.0.1 (``smtp-sink -u nobody -4
127.0.0.1:PORT 256``), then times, in one run:

* ``smtp-source -s 4 -m N -l 5000``: Postfix's C load generator, 4 sessions (the practical
  limit of this machine);
* a plain smtplib loop over one connection, building each mail with ``EmailMessage`` as a
  user would (and, for reference, sending pre-built bytes);
* postline: ``Send`` called from ``--threads`` threads (default; what a pipeline with a
  thread pool does), or ``asend`` from one asyncio loop with ``--mode async``. No throttle,
  ``max_connections`` 4 (the default).

Prints a table: seconds, msgs/s, speed-up vs the smtplib loop and % of smtp-source's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import smtplib
import socket
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
        msgs = [message(i) for i in range(n)]
        t = time.perf_counter()
        if mode == "threads":
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(svc.Send, msgs))
        else:
            async def run():
                return await asyncio.gather(*(svc.asend(m) for m in msgs))
            results = asyncio.run(run())
        elapsed = time.perf_counter() - t
        assert len(results) == n and all(r.server_reply.startswith("250") for r in results)
        return elapsed
    finally:
        svc.close()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--mode", choices=["threads", "async"], default="threads")
    args = ap.parse_args(argv)
    sink, port = start_sink()
    try:
        n = args.mails
        rows = [("smtp-source -s 4 (C)", bench_smtp_source(port, n)),
                ("smtplib loop, EmailMessage per mail", bench_smtplib(port, n, build=True)),
                ("smtplib loop, pre-built bytes", bench_smtplib(port, n, build=False)),
                (f"postline Send ({args.mode}"
                 + (f", {args.threads} threads" if args.mode == "threads" else "") + ")",
                 bench_postline(port, n, mode=args.mode, threads=args.threads))]
    finally:
        sink.terminate()
        sink.wait(5)
    source_rate = n / rows[0][1]
    smtplib_s = rows[1][1]
    print(f"\n{n} mails of ~5 KB to smtp-sink on 127.0.0.1:{port}\n")
    print(f"{'sender':44} {'seconds':>8} {'msgs/s':>8} {'vs smtplib':>11} {'% source':>9}")
    for name, s in rows:
        print(f"{name:44} {s:8.2f} {n / s:8.0f} {smtplib_s / s:10.2f}x {100 * n / s / source_rate:8.0f}%")
    postline_s = rows[-1][1]
    print(f"\ntargets: >= 3x the smtplib loop (got {smtplib_s / postline_s:.2f}x), "
          f">= 33% of smtp-source (got {100 * n / postline_s / source_rate:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
