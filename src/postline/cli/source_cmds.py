"""``postline run`` and ``postline ledger list|reset``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from datetime import datetime, timezone

from postline.errors import ConfigError
from postline.logs import say

RUN_EPILOG = """Examples:
  postline run examples/local --once          one polling round of every workflow, then exit
  postline run examples/local                 run until Ctrl-C / SIGTERM (finishes mails in flight)
  postline run . --workflow Invoices --once   just one workflow
  postline run . --status 9464                also serve /metrics, /healthz, /readyz, /status
                                              on http://127.0.0.1:9464/

One log line per mail (key, subject, outcome, ms) goes to stderr when stderr is not a
terminal, or with -v; on a terminal a progress bar shows while a backlog is read. A summary
line (counts per outcome, time, mails/s) ends the run. Exit status 1 when a workflow stopped
on an error (bad settings, refused login, unreachable server with --once)."""

LEDGER_EPILOG = """Examples:
  postline ledger list examples/local Inbox                 every mail the source has seen
  postline ledger list examples/local Inbox --state failed  just the failed ones, with reasons
  postline ledger list Inbox --json                         (project = current directory)
  postline ledger reset examples/local Inbox --id 'Mailbox/INBOX/1700000000/42'
  postline ledger reset examples/local Inbox --all          forget everything: mails still in
                                                            the input folder are read again
  postline ledger retry examples/local Inbox --all          after fixing the cause: failed mails
                                                            back from the error folder into the
                                                            input folder, read on the next round"""


def register(sub: argparse._SubParsersAction) -> None:
    from postline.cli import HelpFormatter

    p = sub.add_parser("run", help="run workflows: read mailboxes into sinks",
                       formatter_class=HelpFormatter, epilog=RUN_EPILOG)
    p.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    p.add_argument("--once", action="store_true",
                   help="one polling round of every source, exit when all is committed")
    p.add_argument("--workflow", action="append", metavar="NAME",
                   help="run only this workflow (repeatable)")
    p.add_argument("--status", metavar="[HOST:]PORT",
                   help="serve Prometheus /metrics, /healthz, /readyz and /status JSON there "
                        "(host default 127.0.0.1; port 0 picks a free one)")
    p.add_argument("--stall-after", type=float, default=600.0, metavar="SECONDS",
                   help="/healthz fails when a workflow shows no sign of life this long "
                        "(default 600)")
    p.set_defaults(handler=cmd_run)

    lp = sub.add_parser("ledger", help="list or reset what a source has seen",
                        formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    lsub = lp.add_subparsers(dest="ledger_command", metavar="ACTION")
    ls = lsub.add_parser("list", help="list ledger entries of a source",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    ls.add_argument("target", nargs="+", metavar="[PROJECT] SOURCE")
    ls.add_argument("--state", choices=["acquired", "done", "failed", "ignored"])
    ls.add_argument("--limit", type=int, default=None)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=cmd_ledger_list)
    rs = lsub.add_parser("reset", help="forget entries so that the mails are read again",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    rs.add_argument("target", nargs="+", metavar="[PROJECT] SOURCE")
    g = rs.add_mutually_exclusive_group(required=True)
    g.add_argument("--id", action="append", metavar="KEY", help="a ledger key (repeatable)")
    g.add_argument("--all", action="store_true", help="every entry of the source")
    rs.set_defaults(handler=cmd_ledger_reset)
    rt = lsub.add_parser("retry", help="move failed mails back into the input folder and "
                                       "forget their failure, so that the next round "
                                       "processes them again",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    rt.add_argument("target", nargs="+", metavar="[PROJECT] SOURCE")
    g = rt.add_mutually_exclusive_group(required=True)
    g.add_argument("--id", action="append", metavar="KEY", help="a failed entry's key "
                                                                "(repeatable)")
    g.add_argument("--all", action="store_true", help="every failed entry of the source")
    rt.set_defaults(handler=cmd_ledger_retry)
    lp.set_defaults(handler=lambda a: (lp.print_help(sys.stderr), 2)[1])


def _target(args) -> tuple[str, str]:
    from postline.cli.output import project_and_name

    return project_and_name(args.target, what="SOURCE",
                            example="postline ledger list . Inbox")


def _open_ledger(project_path: str, source: str):
    import postline
    from postline.source.ledger import SqliteLedger, ledger_path

    project = postline.open_project(project_path)
    project.get("EmailSource", source)  # raises ConfigError with a did-you-mean
    return SqliteLedger(path=ledger_path(project.state_dir))


def cmd_ledger_list(args) -> int:
    project_path, source = _target(args)
    ledger = _open_ledger(project_path, source)
    try:
        entries = ledger.entries(source, state=args.state, limit=args.limit)
    finally:
        ledger.close()
    if args.json:
        print(json.dumps([asdict(e) for e in entries], ensure_ascii=False, indent=2))
        return 0
    if not entries:
        print(f"no entries for source {source}" + (f" in state {args.state}" if args.state
                                                    else ""))
        return 0
    cols = ("key", "state", "settled", "attempts", "updated", "subject", "reason")
    rows = [(e.key, e.state, "yes" if e.settled else "no", str(e.attempts),
             datetime.fromtimestamp(e.updated, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
             (e.subject or "")[:60], (e.reason or "")[:200]) for e in entries]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(show_lines=False)
        for col in cols:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:  # pipes and files get one tab-separated line per entry, for grep and cut
        print("\t".join(cols))
        for row in rows:
            print("\t".join(v.replace("\t", " ").replace("\n", " ") for v in row))
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def cmd_ledger_reset(args) -> int:
    project_path, source = _target(args)
    ledger = _open_ledger(project_path, source)
    try:
        n = ledger.reset(source, None if args.all else args.id)
    finally:
        ledger.close()
    if not args.all and n == 0:
        raise ConfigError(f"no ledger entry of source {source} has key "
                          f"{args.id[0]!r}", hint="see 'postline ledger list'")
    print(f"reset {n} entr{'y' if n == 1 else 'ies'} of source {source}; "
          "mails still in the input folder are read on the next round")
    return 0


def cmd_ledger_retry(args) -> int:
    import postline
    from postline.protocols import open_reader
    from postline.source.ledger import SqliteLedger, ledger_path
    from postline.workflow.retry import retry_failed

    project_path, name = _target(args)
    project = postline.open_project(project_path)
    source = project.get("EmailSource", name)
    conn = project.get("EmailConnection", source.connection)
    protocol = ("graph" if conn.type == "microsoft365" else
                conn.incoming.protocol if conn.incoming is not None else "")
    ledger = SqliteLedger(path=ledger_path(project.state_dir))
    try:
        if args.all:
            entries = ledger.entries(name, state="failed")
        else:
            known = ledger.get_many(name, args.id)
            for key in args.id:
                entry = known.get(key)
                if entry is None:
                    raise ConfigError(f"no ledger entry of source {name} has key {key!r}",
                                      hint="see 'postline ledger list ... --state failed'")
                if entry.state != "failed":
                    raise ConfigError(f"ledger entry {key!r} of source {name} is "
                                      f"{entry.state}, not failed; only failed mails are "
                                      "retried", hint="'postline ledger reset' forgets any "
                                      "entry")
            entries = [known[k] for k in dict.fromkeys(args.id)]
        if not entries:
            print(f"no failed entries for source {name}")
            return 0
        report = retry_failed(source=source, protocol=protocol, entries=entries,
                              ledger=ledger, reader_factory=lambda: open_reader(project, conn),
                              work_dir=project.state_dir / "work" / f"retry-{name}")
    finally:
        ledger.close()
    for line in report.problems:
        say(f"postline: {line}", level="WARNING")
    n = len(report.reset)
    where = (f"; {report.moved} moved from {source.folders.error!r} back to "
             f"{source.folders.input!r}" if report.moved else "")
    print(f"retrying {n} mail{'' if n == 1 else 's'} of source {name}{where}; the next "
          "round of 'postline run' processes them")
    return 1 if report.problems else 0


class _Progress:
    """Rich progress bar per workflow, shown only while a backlog is read on a terminal."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self.tasks: dict[str, int] = {}
        self.lock = threading.Lock()
        self.started = False

    def backlog(self, workflow: str, count: int) -> None:
        with self.lock:
            if count < 20:
                return
            if not self.started:
                self.progress.start()
                self.started = True
            if workflow in self.tasks:
                self.progress.reset(self.tasks[workflow], total=count)
            else:
                self.tasks[workflow] = self.progress.add_task(workflow, total=count)

    def mail(self, event) -> None:
        with self.lock:
            task = self.tasks.get(event.workflow)
            if task is not None:
                self.progress.advance(task)

    def close(self) -> None:
        if self.started:
            self.progress.stop()


def _start_status(project, args):
    """The --status endpoint, listening before the first round starts."""
    from postline.source.ledger import ledger_path
    from postline.workflow.engine import select_workflows
    from postline.workflow.status import LedgerCounts, RunStatus, StatusServer, parse_address

    host, port = parse_address(args.status)
    if args.stall_after <= 0:
        raise ConfigError(f"--stall-after {args.stall_after:g}: expected a number of "
                          "seconds above 0")
    flows = select_workflows(project, args.workflow)
    counts = LedgerCounts(ledger_path(project.state_dir))
    status = RunStatus({w.name: w.source for w in flows}, stall_after=args.stall_after,
                       ledger_counts=counts)
    server = StatusServer(status, host, port).start()
    say(f"postline: status at {server.url} (metrics, healthz, readyz, status)",
        status_url=server.url)
    return server, counts


def cmd_run(args) -> int:
    import postline
    from postline.workflow.engine import run_workflows
    from postline.workflow.events import Broadcast, Events

    project = postline.open_project(args.project)
    tty = sys.stderr.isatty()
    if not tty or args.verbose:
        logging.getLogger("postline.mail").setLevel(logging.INFO)
    logging.getLogger("postline.workflow").setLevel(logging.INFO if args.verbose else
                                                    logging.WARNING)
    stop = threading.Event()
    progress = _Progress() if tty else None

    class _Events(Events):
        def backlog(self, workflow: str, count: int) -> None:
            if progress:
                progress.backlog(workflow, count)

        def mail(self, event) -> None:
            if progress:
                progress.mail(event)

    def on_signal(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        say("postline: stopping after the mails in flight (press Ctrl-C again to abort)")

    events: Events = _Events()
    server = counts = None
    if args.status:
        server, counts = _start_status(project, args)
        events = Broadcast([events, server.status])
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_workflows(project, names=args.workflow, once=args.once, stop=stop,
                                events=events)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if progress:
            progress.close()
        if server:
            server.close()
            counts.close()
    if summary.mails or not summary.errors:  # no "0 mails" line in front of a start-up error
        say(f"postline: {summary.line()}", summary=dict(summary.counts),
            seconds=round(summary.seconds, 3))
    for name, err in summary.errors.items():
        say(f"postline: error: workflow {name}: {err}", level="ERROR", workflow=name)
    return 1 if summary.errors else 0
