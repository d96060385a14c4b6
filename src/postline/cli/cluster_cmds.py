"""``postline cluster status``: the instances of a fleet and who owns which source
(docs/cluster.md). The handler returns 0, or 1 when an instance is flagged."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

EPILOG = """Examples:
  postline cluster status .
  postline cluster status . --json

Lists the instances of 'postline run' that share the project's postgresql StateStore (name,
host, pid, postline version, assets hash, started, last heartbeat) and every source (owner,
lease expiry, fencing token, last round, backlog = ledger entries not yet settled). An
instance whose version or assets differ from the others' is flagged (exit status 1)."""


def register(sub: Any) -> None:
    """Add the ``cluster`` command group."""
    from postline.cli import HelpFormatter

    group = sub.add_parser("cluster", help="a fleet on a postgresql StateStore: instances "
                                           "and source owners", formatter_class=HelpFormatter,
                           epilog="Examples:\n  postline cluster status .\n")
    actions = group.add_subparsers(dest="cluster_command", metavar="ACTION")
    group.set_defaults(handler=lambda args: (group.print_help(sys.stderr), 2)[1])
    p = actions.add_parser("status", help="instances, and who owns which source",
                           formatter_class=HelpFormatter, epilog=EPILOG)
    p.add_argument("project", metavar="PROJECT", nargs="?", default=".",
                   help="project directory (default: .)")
    p.add_argument("--json", action="store_true", help="machine-readable on stdout")
    p.set_defaults(handler=cmd_status)


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    secs = (now - when).total_seconds()
    return f"{secs:.0f}s ago" if secs >= 0 else f"in {-secs:.0f}s"


def cmd_status(args: argparse.Namespace) -> int:
    from postline.cli.output import cells, console, print_json
    from postline.project import open_project
    from postline.state.cluster import cluster_status

    status = cluster_status(open_project(args.project))
    flagged = any(i.flagged for i in status.instances)
    if args.json:
        print_json(status.as_dict())
        return 1 if flagged else 0
    from rich.table import Table

    now = datetime.now(UTC)
    out = console()
    out.print(f"{status.state_store} at {status.where}")
    t = Table(title="instances", title_justify="left")
    for col in ("name", "host", "pid", "version", "assets", "started", "heartbeat", ""):
        t.add_column(col)
    for i in status.instances:
        note = "FLAGGED: differs from the others" if i.flagged else ("" if i.live else "gone")
        t.add_row(*cells(i.name, i.host, str(i.pid), i.version, i.assets_hash,
                         i.started.strftime("%Y-%m-%d %H:%M:%S"),
                         _ago(i.last_heartbeat, now), note))
    out.print(t)
    t = Table(title="sources", title_justify="left")
    for col in ("source", "owner", "lease expires", "token", "last round", "backlog"):
        t.add_column(col)
    for s in status.sources:
        t.add_row(*cells(s.source, s.owner or "(none)", _ago(s.lease_expires, now),
                         "-" if s.token is None else str(s.token), _ago(s.last_round, now),
                         str(s.backlog)))
    out.print(t)
    return 1 if flagged else 0
