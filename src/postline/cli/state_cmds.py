"""``postline state migrate`` and ``test-connection`` of a StateStore (docs/cluster.md).

Each handler returns the exit status: 0 success, 1 failure (one line on stderr, or the
failed step in the report).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from postline.cli.parsing import HelpFormatter

MIGRATE_EPILOG = """Examples:
  postline state migrate .
  POSTLINE_STATE_URL=postgresql://postline@db:5432/postline postline state migrate .
  postline state migrate . --json
  postline state migrate . --from-sqlite                 copy this project's SQLite state
  postline state migrate . --from-sqlite /srv/old/state  ... or another directory's

Creates the StateStore's schema (default 'postline') and its tables, or upgrades them to
this postline's version; each step in its own transaction, safe to run while instances
run and to run twice. A schema newer than this postline is refused (exit 1)."""


def register(sub: Any) -> None:
    """Add the ``state`` command group."""

    group = sub.add_parser("state", help="the project's shared state (a StateStore on "
                                         "PostgreSQL): create or upgrade its schema",
                           formatter_class=HelpFormatter,
                           epilog="Examples:\n  postline state migrate .\n")
    actions = group.add_subparsers(dest="state_command", metavar="ACTION")
    group.set_defaults(handler=lambda args: (group.print_help(sys.stderr), 2)[1])
    p = actions.add_parser("migrate", help="create or upgrade the StateStore's tables; "
                                           "prints what it did",
                           formatter_class=HelpFormatter, epilog=MIGRATE_EPILOG)
    p.add_argument("project", metavar="PROJECT", nargs="?", default=".",
                   help="project directory (default: .)")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.add_argument("--from-sqlite", metavar="DIR", nargs="?", const="", default=None,
                   help="also copy the SQLite ledger, outbox and token caches of state "
                        "directory DIR (default: the project's) into PostgreSQL; "
                        "idempotent, prints counts")
    p.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    import psycopg

    from postline.project import open_project
    from postline.state.migrations import MIGRATIONS, migrate
    from postline.state.postgres import connect, query_failure, target_of

    project = open_project(args.project)
    target = target_of(project)
    copied = source_dir = None
    if args.from_sqlite is not None:
        from postline.state.from_sqlite import copy_from_sqlite, report_lines, state_dir_of

        source_dir = state_dir_of(project, args.from_sqlite or None)
    with connect(target, autocommit=True) as conn:
        try:
            result = migrate(conn, MIGRATIONS, schema=target.schema, label=target.label,
                             where=target.where)
            if source_dir is not None:
                copied = copy_from_sqlite(conn, target.schema, source_dir)
        except psycopg.Error as exc:
            raise query_failure(target, exc) from exc
    if copied is not None and not args.json:
        for line in report_lines(copied, source_dir, target.label):
            print(line)
    if args.json:
        print(json.dumps({"state_store": target.label.split("/", 1)[1], "where": target.where,
                          "schema": result.schema, "created_schema": result.created_schema,
                          "before": result.before, "after": result.after,
                          "applied": [{"version": m.version, "description": m.description}
                                      for m in result.applied],
                          **({"copied": {k: {"found": f, "copied": n} for k, (f, n) in
                                         vars(copied).items()}} if copied else {})},
                         indent=2))
        return 0
    if not result.applied and not result.created_schema:
        print(f"{target.label}: schema {result.schema} in {target.where} is at version "
              f"{result.after}: current, nothing to do")
        return 0
    if result.created_schema:
        print(f"{target.label}: created schema {result.schema} in {target.where}")
    for m in result.applied:
        print(f"  applied version {m.version}: {m.description}")
    print(f"{target.label}: schema {result.schema} is at version {result.after} (was "
          f"{result.before}): current")
    return 0


def is_state_store(project: Any, name: str) -> bool:
    """Whether ``name`` names a StateStore (and no EmailConnection) of ``project``."""
    kinds = {e.kind for e in project.entries() if e.name == name}
    return "StateStore" in kinds and "EmailConnection" not in kinds


def test_state_store(project: Any, args: argparse.Namespace) -> int:
    """``test-connection`` of a StateStore: the report as text or JSON; 0 when it passed."""
    from postline.errors import PostlineError
    from postline.state.diagnose import check

    try:
        report = check(project, args.name, project_arg=args.project)
    except PostlineError as exc:
        if not args.json:
            raise
        print(json.dumps({"state_store": args.name, "ok": False, "error": exc.message,
                          "hint": exc.hint, "steps": []}, indent=2))
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        render(report)
    return 0 if report.ok else 1


def render(report: Any) -> None:
    """The human-readable report: a header, one line per step, PASSED or FAILED and the fix."""
    from rich.markup import escape

    from postline.cli.connection_cmds import _console

    console = _console()
    console.print(f"[bold]{escape(report.name)}[/] postgresql {escape(report.host)}:"
                  f"{report.port}/{escape(report.database)}, user {escape(report.user)}, "
                  f"schema {escape(report.schema)}")
    for st in report.steps:
        mark = "[green]✓[/]" if st.ok else "[red]✗[/]"
        ms = f"{st.seconds * 1000:7.1f} ms"
        console.print(f"  {mark} {st.name:<15}{ms}  {escape(str(st.detail))}")
    if report.ok:
        state = "current" if report.current else "not current"
        console.print(f"  [green bold]PASSED[/] (schema {state})")
    else:
        console.print("  [red bold]FAILED[/]")
        if report.hint:
            console.print(f"  [bold]fix:[/] {escape(report.hint)}")
