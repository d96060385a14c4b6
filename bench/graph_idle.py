"""What an idle polling round over Microsoft Graph costs, on a folder of many mails.

    python bench/graph_idle.py [--mails 2000] [--rounds 5] [--stack-dir DIR] [--src DIR]

Fills a fresh Dovecot mailbox with ``--mails`` small mails, serves it through the Graph test
double (page size 100, as postline asks with ``Prefer: odata.maxpagesize``), runs one
``run --once`` round of a JSONL workflow over it (every mail processed), then ``--rounds``
idle rounds (nothing new) and reports, per idle round, the Graph requests, the delta pages
and the wall time (median). ``--src`` runs another source tree (e.g. an export of an older
commit: ``git archive <commit> src | tar -x -C /tmp/old``) to compare before and after; the
double comes from that tree too.

The double answers from IMAP, so its own time per page is part of the seconds; the request
count is what a real tenant charges against the 10,000 requests per 10 minutes per app and
mailbox (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path


def small_mails(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        m = EmailMessage()
        m["From"], m["To"] = f"s{i % 17}@example.test", "bench@example.test"
        m["Subject"], m["Message-ID"] = f"idle bench #{i}", f"<idle-{i}@example.test>"
        m["Date"] = "Wed, 01 May 2024 12:00:00 +0000"
        m.set_content(f"mail {i}\n" + "x" * 1500 + "\n")
        out.append(m.as_bytes())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stack-dir")
    ap.add_argument("--src", help="another postline source tree (its src/ directory)")
    args = ap.parse_args()

    from _common import fill_maildir, fresh_user, start_stack

    if args.src:  # everything postline from the other tree, the double included
        sys.path.insert(0, str(Path(args.src).resolve()))
        for name in [m for m in sys.modules if m == "postline" or m.startswith("postline.")]:
            del sys.modules[name]
    import postline
    from postline.auth.credentials import StaticToken
    from postline.protocols.graph import GraphReader
    from postline.protocols.graph_http import GraphSession
    from postline.testing.graph_double import GraphDouble
    from postline.workflow.engine import run_workflows

    print(f"postline from {Path(postline.__file__).parent}")
    info = start_stack(args.stack_dir)
    user = fresh_user(info, "graphidle")
    fill_maildir(info, user, small_mails(args.mails))
    import imaplib

    with imaplib.IMAP4(info.host, info.ports["imap"]) as imap:   # let Dovecot index them
        imap.login(user.email, user.password)
        imap.select("INBOX")
        imap.logout()
    token = info.mint_token(user.email)
    with GraphDouble(stack=info, accept_test_tokens=True, page_size=100) as graph, \
            tempfile.TemporaryDirectory(prefix="graph-idle-") as tmp:
        root = Path(tmp) / "proj"
        root.mkdir()
        docs = [
            {"kind": "EmailConnection", "name": "Box", "type": "microsoft365",
             "microsoft365": {"mailbox": user.email, "graph_url": graph.url,
                              "ca_file": str(info.ca_file),
                              "credential": {"type": "oauth_device_flow",
                                             "authority": info.oidc_authority,
                                             "client_id": info.device_client_id,
                                             "scopes": list(info.mail_scopes)}}},
            {"kind": "EmailSource", "name": "Src", "connection": "Box",
             "polling": {"interval": 3600}, "folders": {"input": "inbox"}},
            {"kind": "Workflow", "name": "Flow", "source": "Src",
             "sinks": [{"type": "jsonl", "path": "out/mails.jsonl"}]}]
        (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
        project = postline.open_project(root)

        def reader(conn):
            return GraphReader(session=GraphSession(
                graph_url=graph.url, mailbox=user.email, provider=StaticToken(token),
                ca_file=str(info.ca_file)))

        def one_round() -> tuple[float, int, int]:
            graph.clear()
            t0 = time.perf_counter()
            summary = run_workflows(project, once=True, reader_factory=reader)
            seconds = time.perf_counter() - t0
            if summary.errors:
                raise SystemExit(f"run failed: {summary.errors}")
            delta = sum(s.path.endswith("/messages/delta") for s in graph.requests)
            return seconds, len(graph.requests), delta

        first = one_round()
        done = len((root / "out/mails.jsonl").read_text().splitlines())
        idle = [one_round() for _ in range(args.rounds)]
    print(f"{args.mails} mails in the Inbox, {done} processed in the first round "
          f"({first[0]:.2f} s, {first[1]} requests, {first[2]} delta pages)")
    print("idle round      requests  delta pages  seconds")
    for i, (sec, req, delta) in enumerate(idle, 1):
        print(f"  {i:<13} {req:>8}  {delta:>11}  {sec:7.3f}")
    print(f"  median        {statistics.median(r for _, r, _ in idle):>8}  "
          f"{statistics.median(d for _, _, d in idle):>11}  "
          f"{statistics.median(s for s, _, _ in idle):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
