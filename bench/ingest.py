"""Ingest benchmark: postline run --once against the raw-fetch floor and an imap-tools loop.

    python bench/ingest.py [--mails 5000] [--stack-dir DIR]

Fills a fresh Dovecot mailbox with generated mails (80% ~5 KB plain, 17% ~50 KB with an
HTML alternative, 3% with a 1 MB attachment, UTF-8 subjects), then measures, in order:

1. floor: one ``UID FETCH 1:* (BODY.PEEK[])`` over one imaplib connection, no parsing;
2. imap-tools: a straightforward loop reading text, HTML and attachment payloads;
3. postline: ``postline run PROJECT --once`` in a fresh process (JSONL sink, attachments
   loaded to files), wall time including interpreter start-up.

All three are measured ``--repeat`` times (default 3), interleaved, and their medians are
compared. Targets: postline <= 3x the floor and >= 4x faster than imap-tools. Exits 1 when
missed.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import fill_maildir, fresh_user, generate, run_postline, start_stack, write_project


def floor(info, user) -> tuple[float, int]:
    t0 = time.perf_counter()
    imap = imaplib.IMAP4(info.host, info.ports["imap"])
    imap.starttls(ssl.create_default_context(cafile=str(info.ca_file)))
    imap.login(user.email, user.password)
    imap.select("INBOX", readonly=True)
    typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
    total = sum(len(d[1]) for d in data if isinstance(d, tuple))
    imap.logout()
    return time.perf_counter() - t0, total


def warm_up(info, user, expected: int) -> None:
    """Let Dovecot index the new Maildir files before anything is timed."""
    imap = imaplib.IMAP4(info.host, info.ports["imap"])
    imap.login(user.email, user.password)
    typ, data = imap.select("INBOX", readonly=True)
    assert int(data[0]) == expected, f"mailbox has {data[0]} mails, expected {expected}"
    imap.uid("FETCH", "1:*", "(RFC822.SIZE INTERNALDATE)")
    imap.logout()


def imap_tools_loop(info, user) -> tuple[float, int]:
    from imap_tools import MailBoxStartTls

    t0 = time.perf_counter()
    n = 0
    ctx = ssl.create_default_context(cafile=str(info.ca_file))
    with MailBoxStartTls(info.host, info.ports["imap"], ssl_context=ctx).login(
            user.email, user.password, "INBOX") as box:
        for msg in box.fetch(mark_seen=False):
            _ = (msg.subject, msg.from_, msg.to, msg.date, msg.text, msg.html)
            for att in msg.attachments:
                _ = (att.filename, att.content_type, len(att.payload))
            n += 1
    return time.perf_counter() - t0, n


def stdlib_parse(mails: list[bytes]) -> float:
    """Seconds to parse ``mails`` in memory with the stdlib (compat32, every part's payload
    decoded): how fast this machine runs pure-Python mail parsing, which is most of the
    imap-tools loop. The issue's figure for its machine kind: about 9 s."""
    import email
    from email import policy

    t0 = time.perf_counter()
    for raw in mails:
        for part in email.message_from_bytes(raw, policy=policy.compat32).walk():
            if not part.is_multipart():
                part.get_payload(decode=True)
    return time.perf_counter() - t0


def run_postline_once(info, user, tmp: Path) -> float:
    project = write_project(tmp / "proj", info, user)
    t_pl, res = run_postline(project, user)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        raise SystemExit(1)
    lines = (project / "out" / "mails.jsonl").read_text().splitlines()
    stored = sum(1 for _ in (project / "out" / "attachments").rglob("*") if _.is_file())
    parsers: dict[str, int] = {}
    for line in lines:
        rec = json.loads(line)
        parsers[rec["parser"]] = parsers.get(rec["parser"], 0) + 1
    summary = (res.stderr.strip().splitlines()[-1:] or [""])[0]
    print(f"  postline run --once: {t_pl:.2f}s wall ({summary}); {len(lines)} records, "
          f"{stored} attachment files, parsers {parsers}")
    return t_pl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=5000)
    ap.add_argument("--stack-dir")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the three measurements; medians are compared (the "
                         "machines here are shared: one round can be off by 30%%)")
    ap.add_argument("--skip-imap-tools", action="store_true")
    args = ap.parse_args(argv)

    info = start_stack(args.stack_dir)
    user = fresh_user(info, "bench")
    t0 = time.perf_counter()
    mails = generate(args.mails)
    fill_maildir(info, user, mails)
    raw_mb = sum(map(len, mails)) / 1e6
    print(f"mailbox {user.email}: {len(mails)} mails, {raw_mb:.0f} MB "
          f"(generated and filled in {time.perf_counter() - t0:.1f}s)")
    warm_up(info, user, len(mails))
    if not args.skip_imap_tools:
        print(f"machine: the stdlib (compat32) parses these mails in {stdlib_parse(mails):.1f}s "
              "(the issue's machine kind: ~9 s; a faster Python shortens the imap-tools "
              "loop far more than postline)")

    floors, tools, pls = [], [], []
    with tempfile.TemporaryDirectory(prefix="postline-bench-") as tmp:
        for r in range(args.repeat):
            print(f"round {r + 1}/{args.repeat}")
            floors.append(min(floor(info, user)[0] for _ in range(2)))
            print(f"  floor (raw UID FETCH 1:*, one connection): {floors[-1]:.2f}s")
            if not args.skip_imap_tools:
                t_tools, n = imap_tools_loop(info, user)
                tools.append(t_tools)
                print(f"  imap-tools loop (text, html, attachments): {t_tools:.2f}s for "
                      f"{n} mails")
            pls.append(run_postline_once(info, user, Path(tmp)))

    med = statistics.median
    t_floor, t_pl = med(floors), med(pls)
    print(f"medians of {args.repeat}: floor {t_floor:.2f}s, postline {t_pl:.2f}s"
          + (f", imap-tools {med(tools):.2f}s" if tools else ""))
    ok = True
    ratio = t_pl / t_floor
    print(f"postline / floor = {ratio:.2f} (target <= 3)")
    ok &= ratio <= 3
    if tools:
        speedup = med(tools) / t_pl
        print(f"imap-tools / postline = {speedup:.1f} (target >= 4)")
        ok &= speedup >= 4
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
