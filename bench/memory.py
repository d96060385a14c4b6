"""Memory benchmark: ingest one mail with a 100 MB attachment; peak RSS growth < 1.5x raw.

    python bench/memory.py [--mb 100] [--stack-dir DIR]

Runs ``postline run --once`` twice in fresh processes: on an empty mailbox (the baseline:
interpreter, imports, connection) and on the mailbox holding the big mail. The growth is
the difference of the two peak RSS values (``wait4`` rusage of each child). The
attachment must end up on disk with the right SHA-256 and never in the JSON record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from _common import fill_maildir, fresh_user, postline_env, start_stack, write_project


_CHILD = """
import re, sys
from postline.cli import main
code = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(f"VMHWM {int(hwm) * 1024}", file=sys.stderr)
sys.exit(code)
"""


def peak_rss_run(project: Path, user, state: Path) -> tuple[int, float, str]:
    """(peak RSS in bytes, seconds, stderr) of one ``postline run --once``. The peak is the
    child's own VmHWM (rusage maxrss would include the parent's RSS inherited at fork)."""
    cmd = [sys.executable, "-c", _CHILD, "run", str(project), "--once"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=postline_env(user, state), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"postline run failed: {res.stderr[-2000:]}")
    peak = int(res.stderr.rsplit("VMHWM ", 1)[1].split()[0])
    return peak, time.perf_counter() - t0, res.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--stack-dir")
    args = ap.parse_args(argv)
    info = start_stack(args.stack_dir)
    user = fresh_user(info, "memory")
    payload = os.urandom(args.mb * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    m = EmailMessage()
    m["From"] = "big@example.test"
    m["To"] = user.email
    m["Subject"] = f"{args.mb} MB attachment"
    m.set_content("see attachment\n")
    m.add_attachment(payload, maintype="application", subtype="octet-stream",
                     filename="big.bin")
    raw = m.as_bytes().replace(b"\n", b"\r\n")
    del payload, m
    with tempfile.TemporaryDirectory(prefix="postline-mem-") as tmp:
        project = write_project(Path(tmp) / "proj", info, user)
        base, _, _ = peak_rss_run(project, user, Path(tmp) / "state0")
        fill_maildir(info, user, [raw])
        size = len(raw)
        del raw
        peak, secs, err = peak_rss_run(project, user, Path(tmp) / "state1")
        [line] = (project / "out" / "mails.jsonl").read_text().splitlines()
        rec = json.loads(line)
        [att] = rec["attachments"]
        assert att["sha256"] == digest and att["stored"], att
        assert hashlib.sha256(Path(att["path"]).read_bytes()).hexdigest() == digest
        assert len(line) < 100_000, "attachment content leaked into the record"
    growth = peak - base
    ratio = growth / size
    print(f"raw mail {size / 1e6:.0f} MB ingested in {secs:.1f}s; peak RSS {peak / 1e6:.0f} MB, "
          f"baseline {base / 1e6:.0f} MB, growth {growth / 1e6:.0f} MB = {ratio:.2f}x raw "
          f"(target < 1.5x)")
    return 0 if ratio < 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
