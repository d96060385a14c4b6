"""``postline ledger list|reset|prune|retry``: what a source has seen, and what to do again."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime

from postline.cli.parsing import HelpFormatter
from postline.errors import ConfigError
from postline.logs import say
from postline.project import source_of
from postline.state.states import LedgerState

LEDGER_EPILOG = """Examples:
  postline ledger list examples/local Inbox                 every mail the source has seen
  postline ledger list examples/local Inbox --state failed  just the failed ones, with reasons
  postline ledger list Inbox --json                         (project = current directory)
  postline ledger reset examples/local Inbox --id 'Mailbox/INBOX/1700000000/42'
  postline ledger reset examples/local Inbox --all          forget everything: mails still in
                                                            the input folder are read again
  postline ledger prune examples/local Inbox --older-than 90d   forget done/ignored mails that
                                                            were moved away 90 days ago or more
  postline ledger retry examples/local Inbox --all          after fixing the cause: failed mails
                                                            back from the error folder into the
                                                            input folder, read on the next round"""


def register(sub: argparse._SubParsersAction) -> None:
    from postline.cli.output import add_target

    lp = sub.add_parser("ledger", help="list, reset, prune or retry what a source has seen",
                        formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    lsub = lp.add_subparsers(dest="ledger_command", metavar="ACTION")
    ls = lsub.add_parser("list", help="list ledger entries of a source",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    add_target(ls, "SOURCE", "the Email Source")
    ls.add_argument("--state", choices=[s.value for s in LedgerState],
                    help="only entries in this state (acquired: being processed, or "
                         "interrupted)")
    ls.add_argument("--limit", type=int, default=None, metavar="N",
                    help="at most N entries (default: all)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=cmd_ledger_list)
    rs = lsub.add_parser("reset", help="forget entries so that the mails are read again",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    add_target(rs, "SOURCE", "the Email Source")
    g = rs.add_mutually_exclusive_group(required=True)
    g.add_argument("--id", action="append", metavar="KEY", help="a ledger key (repeatable)")
    g.add_argument("--all", action="store_true", help="every entry of the source")
    rs.set_defaults(handler=cmd_ledger_reset)
    pr = lsub.add_parser("prune", help="forget old entries of mails that were moved or "
                                       "deleted (keeps the ledger small over months)",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    add_target(pr, "SOURCE", "the Email Source")
    pr.add_argument("--older-than", required=True, metavar="AGE",
                    help="last updated longer ago than this: 90d, 12h, 30m (a bare number: "
                         "days)")
    pr.add_argument("--state", action="append",
                    choices=[s.value for s in LedgerState if s != LedgerState.ACQUIRED],
                    help="which entries (repeatable; default: done and ignored)")
    pr.set_defaults(handler=cmd_ledger_prune)
    rt = lsub.add_parser("retry", help="move failed mails back into the input folder and "
                                       "forget their failure, so that the next round "
                                       "processes them again",
                         formatter_class=HelpFormatter, epilog=LEDGER_EPILOG)
    add_target(rt, "SOURCE", "the Email Source")
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
    from postline.state.stores import open_ledger

    project = postline.open_project(project_path)
    project.get("EmailSource", source)  # raises ConfigError with a did-you-mean
    return open_ledger(project)


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
    from rich.table import Table

    from postline.cli.output import cells, console

    table = Table(title=f"Ledger of {source}" + (f" ({args.state})" if args.state else ""),
                  title_justify="left")
    for col in ("key", "state", "settled", "tries", "updated", "subject", "reason"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(*cells(e.key, e.state, "yes" if e.settled else "no", str(e.attempts),
                             datetime.fromtimestamp(e.updated, tz=UTC)
                             .strftime("%Y-%m-%d %H:%M:%SZ"), (e.subject or "")[:60],
                             (e.reason or "")[:200]))
    if entries:
        console().print(table)
    state = f" in state {args.state}" if args.state else ""
    n = len(entries)
    print(f"{n} entr{'y' if n == 1 else 'ies'}{state}" if n else
          f"no entries for source {source}{state}")
    return 0


def cmd_ledger_reset(args) -> int:
    project_path, source = _target(args)
    ledger = _open_ledger(project_path, source)
    try:
        if not args.all:
            # all or nothing: a mistyped key among several resets none of them
            known = ledger.get_many(source, args.id)
            unknown = [key for key in dict.fromkeys(args.id) if key not in known]
            if unknown:
                raise ConfigError(f"no ledger entry of source {source} has key "
                                  f"{', '.join(map(repr, unknown))}; nothing was reset",
                                  hint="see 'postline ledger list'")
        n = ledger.reset(source, None if args.all else args.id)
    finally:
        ledger.close()
    print(f"reset {n} entr{'y' if n == 1 else 'ies'} of source {source}; "
          "mails still in the input folder are read on the next round")
    return 0


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (a bare number: days) -> seconds.
    Raises ConfigError."""
    t = text.strip().lower()
    unit = t[-1:] if t[-1:] in _AGE_UNITS else "d"
    number = t[:-1] if t[-1:] in _AGE_UNITS else t
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:  # negative or NaN
        raise ConfigError(f"--older-than {text!r}: expected an age such as 90d, 12h or 30m")
    return value * _AGE_UNITS[unit]


def cmd_ledger_prune(args) -> int:
    import time

    import postline
    from postline.state.stores import open_ledger
    from postline.workflow.runner import server_action

    project_path, name = _target(args)
    age = parse_age(args.older_than)
    project = postline.open_project(project_path)
    source, _, protocol = source_of(project, name)
    asked = args.state or [LedgerState.DONE, LedgerState.IGNORED]
    safe, kept = [], []
    for state in dict.fromkeys(asked):
        if server_action(source, protocol, state)[0]:
            safe.append(state)
        else:
            where = ("on the server (pop3." if protocol == "pop3" else "in the input folder "
                     "(folders.") + {LedgerState.DONE: "done", LedgerState.FAILED: "error",
                                     LedgerState.IGNORED: "ignore"}[state] + ")"
            kept.append(f"{state} mails of source {name} stay {where}: forgetting them "
                        "would process them again")
    if kept and args.state:
        raise ConfigError(kept[0], hint="prune only states whose mails are moved or deleted")
    n = 0
    if safe:
        ledger = open_ledger(project)
        try:
            n = ledger.prune(name, before=time.time() - age, states=safe)
        finally:
            ledger.close()
    for line in kept:
        say(f"postline: kept: {line}")
    states = " and ".join(safe) or "no"
    print(f"pruned {n} {states} entr{'y' if n == 1 else 'ies'} of source {name} older than "
          f"{args.older_than}")
    return 0


def cmd_ledger_retry(args) -> int:
    import postline
    from postline.protocols import open_reader
    from postline.state.stores import open_ledger
    from postline.workflow.retry import retry_failed

    project_path, name = _target(args)
    project = postline.open_project(project_path)
    source, conn, protocol = source_of(project, name)
    ledger = open_ledger(project)
    try:
        if args.all:
            entries = ledger.entries(name, state=LedgerState.FAILED)
        else:
            known = ledger.get_many(name, args.id)
            for key in args.id:
                entry = known.get(key)
                if entry is None:
                    raise ConfigError(f"no ledger entry of source {name} has key {key!r}",
                                      hint="see 'postline ledger list ... --state failed'")
                if entry.state != LedgerState.FAILED:
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
