"""``postline validate | assets | show | usage``: look at a project's assets.

Each handler returns the exit status: 0 success, 1 failure (reasons on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from postline.assets import render
from postline.cli.output import cells, console, print_json
from postline.cli.parsing import HelpFormatter
from postline.project import Project, load_project, stored_as


def _summary(project: Project) -> str:
    counts = Counter(e.kind for e in project.entries())
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{len(project.entries())} asset(s) ({kinds})" if counts else "0 assets"


def cmd_validate(args) -> int:
    project = load_project(args.project)
    errors, warnings = project.errors, project.warnings
    if args.json:
        print_json({"project": args.project, "valid": not errors,
                    "assets": len(project.entries()),
                    "errors": [p.as_dict() for p in errors],
                    "warnings": [p.as_dict() for p in warnings],
                    "notes": [p.as_dict() for p in project.notes]})
        return 1 if errors else 0
    for problem in project.problems:
        print(problem, file=sys.stderr)
    plural = "s" if len(warnings) != 1 else ""
    if errors:
        print(f"postline: {args.project}: {len(errors)} error(s), {len(warnings)} "
              f"warning{plural}", file=sys.stderr)
        return 1
    skipped = len(project.notes)
    other = f"; {skipped} YAML file{'s' if skipped != 1 else ''} without assets skipped" \
        if skipped else ""
    print(f"{args.project}: valid: {_summary(project)}, {len(warnings)} warning{plural}{other}")
    return 0


def _note_errors(project: Project, args) -> None:
    if project.errors:
        print(f"postline: note: {args.project} has {len(project.errors)} error(s); run "
              f"'postline validate {args.project}'", file=sys.stderr)


def cmd_assets(args) -> int:
    project = load_project(args.project)
    rows = []
    for e in project.entries():
        desc = e.doc.data.get("description")
        if e.model is not None:
            desc = e.model.description
        if ("description",) in e.sensitive:
            desc = "***"
        users = len({(r.source_kind, r.source) for r in project.references
                     if (r.target_kind, r.target) == (e.kind, e.name)})
        rows.append({"kind": e.kind, "name": e.name, "description": desc or "",
                     "used_by": users, "valid": e.model is not None,
                     "file": e.doc.file, "line": e.doc.line})
    if args.json:
        print_json(rows)
    else:
        from rich.table import Table

        table = Table(title=f"Assets in {args.project}", title_justify="left")
        for col in ("Kind", "Name", "Description", "Used by", "Location"):
            table.add_column(col, overflow="fold")
        for r in rows:
            name = r["name"] if r["valid"] else f"{r['name']} (invalid)"
            table.add_row(*cells(r["kind"], name, r["description"], str(r["used_by"]),
                                 f"{r['file']}:{r['line']}"))
        console().print(table)
    _note_errors(project, args)
    return 0


def cmd_show(args) -> int:
    project = load_project(args.project)
    e = project.find(args.name, args.kind)
    if e.model is None:
        for p in project.problems:
            if p.asset == e.label:
                print(p, file=sys.stderr)
        print(f"postline: {e.label} is invalid", file=sys.stderr)
        return 1
    lines = render.walk(e.model, sensitive=e.sensitive, stored_as=stored_as(project),
                        origins=e.origins)
    if args.json:
        data, notes = render.as_json(lines)
        print_json({"kind": e.kind, "name": e.name, "file": e.doc.file, "line": e.doc.line,
                    "asset": data, "notes": notes,
                    "warnings": [p.as_dict() for p in project.warnings if p.asset == e.label]})
        return 0
    print(f"# {e.label} ({e.location})")
    print(render.as_text(lines))
    for p in project.warnings:
        if p.asset == e.label:
            print(p, file=sys.stderr)
    return 0


def cmd_usage(args) -> int:
    project = load_project(args.project)
    e = project.find(args.name, args.kind)
    refs = project.usage(e.name, e.kind)
    users = list(dict.fromkeys(r.source_label for r in refs))
    if args.json:
        print_json({"kind": e.kind, "name": e.name, "count": len(users), "used_by": users,
                    "references": [r.as_dict() for r in refs]})
        return 0
    if not refs:
        print(f"{e.label} is not used by any asset")
        return 0
    print(f"{e.label} is used by {len(users)} asset(s):")
    width = max(len(r.source_label) for r in refs)
    for r in refs:
        target = f" -> {r.target_text}" if r.key or r.via_macro else ""
        macro = " (macro)" if r.via_macro else ""
        print(f"  {r.source_label.ljust(width)}  {r.field}{target}{macro}  ({r.file}:{r.line})")
    return 0


def _parser(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:

    return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                          epilog="Examples:\n" + example)


def register(sub) -> None:
    """Add validate, assets, show and usage to the ``postline`` parser."""
    p = _parser(sub, "validate", "check every asset of a project; list all errors",
                "  postline validate examples/local\n"
                "  postline validate examples/local --json | jq .errors\n\n"
                "Exit status 0 when valid (warnings do not fail), 1 with every error on stderr\n"
                "as 'file:line: Kind/name: field: what is wrong'.")
    p.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.set_defaults(handler=cmd_validate)

    p = _parser(sub, "assets", "list a project's assets (secrets masked)",
                "  postline assets examples/local\n  postline assets examples/local --json")
    p.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    p.add_argument("--json", action="store_true", help="machine-readable list on stdout")
    p.set_defaults(handler=cmd_assets)

    p = _parser(sub, "show", "show one asset resolved: macros expanded, defaults explained, "
                "secrets masked",
                "  postline show examples/local LocalMail\n"
                "  postline show examples/local Dev --kind Environment --json")
    p.add_argument("project", help="project directory")
    p.add_argument("name", help="asset name")
    p.add_argument("--kind", help="asset kind, when several kinds share the name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_show)

    p = _parser(sub, "usage", "which assets reference an asset, and through which field",
                "  postline usage examples/local LocalMail\n"
                "  postline usage examples/local DemoSecrets --kind Secret --json")
    p.add_argument("project", help="project directory")
    p.add_argument("name", help="asset name")
    p.add_argument("--kind", help="asset kind, when several kinds share the name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_usage)
