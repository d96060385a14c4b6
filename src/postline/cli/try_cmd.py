"""``postline try``: run a workflow on sample mails (or peek at its mailbox) with no effect."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from postline.cli.parsing import HelpFormatter
from postline.errors import ConfigError
from postline.logs import redact, say

TRY_EPILOG = """Examples:
  postline try examples/local InboxToFiles examples/local/samples/mails/*.eml
  postline try . Invoices ~/Maildir/.Invoices          a Maildir (cur/ and new/)
  postline try . Invoices archive.mbox --json          one JSON object per mail
  postline try . Invoices samples/ --write-sinks       also write the workflow's sinks
  postline try . Invoices --peek 5                     the 5 newest mails of the input folder

Each mail goes through what a round of 'postline run' does to it: the source's filters,
parsing, attachment rules, the stream name, the processor with its services, the sinks.
Nothing else happens: no ledger entry, nothing moved or marked read on the server (--peek
uses IMAP EXAMINE and BODY.PEEK, POP3 TOP, Graph GETs), attachments go to a temporary
directory, no sink is written (--write-sinks writes them), and the services' mails are
shown, not sent (--send sends them). A failing processor is not retried.

Per mail: the outcome (done, ignored with the rule that matched, failed with the
processor's file:line and the traceback's last frames), where the mail would go, and the
record. Exit status 0 when every mail would be done or ignored, 1 otherwise (so a CI job
can run it on a folder of sample mails)."""


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("try", help="run a workflow on sample mails (or peek at its mailbox), "
                                   "with no effect", formatter_class=HelpFormatter,
                       epilog=TRY_EPILOG)
    p.add_argument("project", help="project directory")
    p.add_argument("workflow", help="the Workflow to try")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help=".eml files, directories of them, Maildirs or mbox files")
    p.add_argument("--peek", type=int, metavar="N",
                   help="instead of files: the N newest mails of the source's input folder, "
                        "read-only")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per mail (outcome, folder, record, sends)")
    p.add_argument("--write-sinks", action="store_true",
                   help="also write the workflow's sinks (and attachments where a run "
                        "stores them)")
    p.add_argument("--send", action="store_true",
                   help="really send what the processor sends through its services")
    p.set_defaults(handler=cmd_try)


def cmd_try(args: argparse.Namespace) -> int:
    import postline
    from postline.workflow.trial import Trial
    from postline.workflow.trial_mails import mail_files

    if args.peek is not None and args.files:
        raise ConfigError("give FILE... or --peek N, not both")
    if args.peek is None and not args.files:
        raise ConfigError("nothing to try: give .eml files, Maildirs or mbox files, "
                          "or --peek N", hint=f"e.g. postline try {args.project} "
                                              f"{args.workflow} samples/*.eml")
    if args.peek is not None and args.peek < 1:
        raise ConfigError(f"--peek {args.peek}: expected a number of mails above 0")
    files = mail_files(args.files) if args.files else []
    project = postline.open_project(args.project)
    counts: Counter[str] = Counter()
    with Trial(project, args.workflow, write_sinks=args.write_sinks,
               send=args.send) as trial:
        mails = trial.peek(args.peek) if args.peek is not None else trial.files(files)
        for result in trial.run(mails):
            counts[result.outcome] += 1
            if args.json:
                line = json.dumps(result.to_json(), ensure_ascii=False, default=str)
                sys.stdout.write(redact(line) + "\n")
            else:
                sys.stdout.write(redact(describe(result, input_folder=trial.source.folders
                                                 .input)) + "\n")
            sys.stdout.flush()
        kept = trial.attachments_dir
    total = sum(counts.values())
    parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "ignored", "failed"))
    effects = []
    if not args.write_sinks:
        effects.append("no sink written")
    if not args.send:
        effects.append("nothing sent")
    if kept is not None and kept.is_dir():
        effects.append(f"attachments in {kept}")
    line = (f"postline: {total} mail{'s' if total != 1 else ''} tried: {parts}"
            + (f" ({'; '.join(effects)})" if effects else ""))
    if args.json:
        say(line)
    else:
        sys.stdout.write(line + "\n")
    return 0 if total == counts.get("done", 0) + counts.get("ignored", 0) else 1


def describe(result: Any, *, input_folder: str) -> str:
    """``result`` as a user reads it: a heading line with outcome and folder, then the
    reason, the traceback, the record's main fields, the processor's changes and the
    services' sends, one per line."""
    where = (f"stays in {input_folder}" if result.folder == "stays"
             else "deleted from the server" if result.folder == "deleted"
             else f"-> {result.folder}")
    lines = [f"{result.mail}: {result.outcome} ({where})"]

    def row(label: str, value: Any) -> None:
        text = str(value)
        first, *rest = text.splitlines() or [""]
        lines.append(f"  {label + ':':<13}{first}")
        lines.extend(f"  {'':<13}{more}" for more in rest)

    if result.reason and result.outcome != "done":
        row("reason", result.reason)
    if result.traceback:
        row("traceback", "\n".join(result.traceback))
    for w in result.warnings:
        row("warning", w)
    if result.key != result.mail:   # (a peeked mail is named by its key)
        row("key", result.key)
    rec = result.record
    if rec is None:
        row("subject", result.subject)
    else:
        _record_rows(rec, row)
    if result.changes:
        for kind, mark in (("added", "+"), ("changed", "~")):
            for k, v in result.changes.get(kind, {}).items():
                value = json.dumps(v, ensure_ascii=False, default=str)
                row("processor", f"{mark} {k} = {_short(value, 200)}")
        for k in result.changes.get("removed", []):
            row("processor", f"- {k}")
    for s in result.sends:
        to = ", ".join(s.to + [f"cc {a}" for a in s.cc] + [f"bcc {a}" for a in s.bcc])
        state = ("sent" if s.sent else f"not sent: {s.error}" if s.error
                 else "not sent")
        row("sends", f"{s.service}.{s.method} to {to or '(nobody)'}: {s.subject!r} ({state})")
    return "\n".join(lines)


def _record_rows(rec: dict[str, Any], row: Any) -> None:
    if rec.get("stream_name"):
        row("stream", rec["stream_name"])
    row("subject", rec.get("subject"))
    for field in ("from", "to", "cc"):
        people = rec.get(field) or []
        if people and isinstance(people, list):
            row(field, ", ".join(_person(p) for p in people))
    if rec.get("date"):
        row("date", rec["date"])
    if rec.get("text"):
        row("text", _short(" ".join(str(rec["text"]).split()), 160))
    if rec.get("html"):
        row("html", f"{len(rec['html'])} characters")
    for a in rec.get("attachments") or []:
        if not isinstance(a, dict):
            continue
        kept = (f"stored: {a['path']}" if a.get("path") else
                f"not stored: {a['skipped_reason']}" if a.get("skipped_reason")
                else "not stored")
        row("attachment", f"{a.get('filename') or '(no name)'}  {a.get('content_type')}  "
                          f"{a.get('size')} bytes  {kept}")
    for d in rec.get("defects") or []:
        row("defect", d)


def _person(p: Any) -> str:
    if not isinstance(p, dict):
        return str(p)
    name, addr = p.get("name"), p.get("address")
    return f"{name} <{addr}>" if name else str(addr)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
