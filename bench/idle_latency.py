"""IDLE latency: time from an IMAP APPEND to the record in the JSONL sink (median < 250 ms).

    python bench/idle_latency.py [--mails 30] [--stack-dir DIR]

Starts ``postline run PROJECT`` (IDLE on, hourly polling) in a fresh process, waits until it
idles, then APPENDs one mail at a time and waits for its record before the next one.

First it measures the server's own IDLE notification delay with a bare IMAPClient: Dovecot
holds change notifications back for a fixed 500 ms (``NOTIFY_DELAY_MSECS`` in its
mailbox-watch code), so no IDLE client can see a new mail sooner on this stack. The target
is checked on postline's own share: median latency minus that server delay < 250 ms.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import fresh_user, postline_env, start_stack, write_project


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.001)
    raise SystemExit(f"timed out waiting for {what}")


def server_idle_delay(info, user, samples: int = 3) -> float:
    """Median ms from APPEND until a bare IDLE client hears EXISTS."""
    from imapclient import IMAPClient

    c = IMAPClient(info.host, port=info.ports["imap"], ssl=False)
    c.login(user.email, user.password)
    c.create_folder("Probe")
    c.select_folder("Probe")
    other = imaplib.IMAP4(info.host, info.ports["imap"])
    other.login(user.email, user.password)
    delays = []
    for _ in range(samples):
        c.idle()
        time.sleep(0.1)
        t0 = time.perf_counter()
        other.append("Probe", None, None, b"Subject: probe\r\n\r\nx\r\n")
        c.idle_check(timeout=5)
        delays.append((time.perf_counter() - t0) * 1000)
        c.idle_done()
    other.logout()
    c.logout()
    return statistics.median(delays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=30)
    ap.add_argument("--stack-dir")
    args = ap.parse_args(argv)
    info = start_stack(args.stack_dir)
    user = fresh_user(info, "idle")
    server = server_idle_delay(info, user)
    print(f"server: a bare IDLE client hears a new mail after {server:.0f} ms (median)")
    with tempfile.TemporaryDirectory(prefix="postline-idle-") as tmp:
        project = write_project(Path(tmp) / "proj", info, user, idle=True)
        out = project / "out" / "mails.jsonl"
        cmd = [sys.executable, "-m", "postline", "-v", "run", str(project)]
        proc = subprocess.Popen(cmd, env=postline_env(user, Path(tmp) / "state"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        imap = imaplib.IMAP4(info.host, info.ports["imap"])
        imap.login(user.email, user.password)
        latencies = []
        try:
            # warm-up mail: postline is connected and idling once its record is there
            imap.append("INBOX", None, None, b"Subject: warm-up\r\n\r\nx\r\n")
            wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") == 1, 30,
                     "the warm-up record")
            time.sleep(0.3)  # let it settle into IDLE
            for i in range(args.mails):
                raw = f"Subject: idle {i}\r\nMessage-ID: <idle-{i}@x>\r\n\r\nbody\r\n".encode()
                t0 = time.perf_counter()
                imap.append("INBOX", None, None, raw)
                wait_for(lambda: out.read_bytes().count(b"\n") == i + 2, 10, f"record {i}")
                latencies.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.05)
        finally:
            imap.logout()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) == args.mails + 1
    med = statistics.median(latencies)
    p90 = sorted(latencies)[int(len(latencies) * 0.9) - 1]
    print(f"APPEND -> record: median {med:.0f} ms, p90 {p90:.0f} ms, max {max(latencies):.0f} ms "
          f"over {len(latencies)} mails; postline's own share {med - server:.0f} ms "
          f"(target < 250 ms)")
    return 0 if med - server < 250 else 1


if __name__ == "__main__":
    sys.exit(main())
