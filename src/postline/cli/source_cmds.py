"""``postline run``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from postline.cli.parsing import HelpFormatter
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

def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("run", help="run workflows: read mailboxes into sinks",
                       formatter_class=HelpFormatter, epilog=RUN_EPILOG)
    p.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    p.add_argument("--instance", metavar="NAME",
                   help="this instance's name in a fleet (a postgresql StateStore; default "
                        "host:pid); see postline cluster status")
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



class _Progress:
    """Rich progress bar per workflow, shown only while a backlog is read on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        # on stderr, like the logs: stdout carries records (the stdout sink) and the summary
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                                 console=Console(stderr=True))
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
    from postline.state.ledger import ledger_path
    from postline.workflow.engine import select_workflows
    from postline.workflow.status import LedgerCounts, RunStatus, StatusServer, parse_address

    host, port = parse_address(args.status)
    if args.stall_after <= 0:
        raise ConfigError(f"--stall-after {args.stall_after:g}: expected a number of "
                          "seconds above 0")
    flows = select_workflows(project, args.workflow)
    from postline.state.stores import open_ledger, shared_store

    counts = LedgerCounts(ledger_path(project.state_dir), opener=(
        (lambda: open_ledger(project, read_only=True)) if shared_store(project) else None))
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
                                events=events, instance=args.instance)
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
