"""``postline keys create`` and ``postline secret set | list``.

Secret values are read from a no-echo prompt (asked twice) or from stdin when stdin is
not a terminal -- never from the command line, where they would land in shell history
and in the process list. Nothing here ever prints a value.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from postline.assets import secrets as keys
from postline.assets.kinds.secret import value_source
from postline.assets.secret_edit import set_sealed
from postline.cli.project_cmds import _parser, console, print_json
from postline.errors import ConfigError, SecretError, StorageError
from postline.project import STATE_DIR_NAME, load_project


def cmd_keys_create(args) -> int:
    root = Path(args.project).expanduser().resolve()
    try:
        created = keys.create_key_pair(root, key_file=args.key_file, environ=os.environ,
                                       force=args.force)
    except OSError as exc:
        raise StorageError.from_os_error(exc, what="cannot write the key pair:") from exc
    print(f"created key pair {created.key_id}")
    print(f"  public key:  {created.public_file} (commit it: it can only seal secrets)")
    print(f"  private key: {created.private_file} (mode 600; keep it on the hosts that run "
          "postline, never commit it)")
    if args.key_file or os.environ.get("POSTLINE_KEY_FILE"):
        print(f"  set POSTLINE_KEY_FILE={created.private_file} (or pass --key-file) where "
              "postline runs")
    return 0


def read_value(prompt_name: str) -> str:
    """The secret value: from a no-echo prompt asked twice, or all of stdin if not a TTY.

    One trailing newline of stdin is dropped. Raises SecretError when empty or mismatched.
    """
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(f"value for {prompt_name}: ")
        again = getpass.getpass("again: ")
        if first != again:
            raise SecretError("the two values differ; nothing was stored")
        value = first
    else:
        value = sys.stdin.read() if sys.stdin is not None else ""
        value = value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") \
            else value
    if not value:
        raise SecretError(f"empty value for {prompt_name}; nothing was stored")
    return value


def cmd_secret_set(args) -> int:
    root = Path(args.project).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"project directory {args.project} does not exist")
    public = keys.read_public_key(root)
    if public is None:
        raise SecretError(f"{args.project} has no public key ({keys.PUBLIC_KEY_FILE})",
                          hint=f"run 'postline keys create {args.project}' first")
    label = f"{args.asset}.{args.key}"
    state = os.environ.get("POSTLINE_STATE_DIR")
    skip = (Path(state).expanduser().resolve() if state else root / STATE_DIR_NAME,)
    if not args.create:
        _refuse_likely_typo(root, args.project, args.asset, args.key, skip)
    sealed = keys.seal(public, read_value(label))
    written = set_sealed(root, args.asset, args.key, sealed, skip=skip)
    shown = os.path.normpath(os.path.join(args.project, written.path.relative_to(root)))
    what = "created Secret asset" if written.created else "updated"
    print(f"sealed {label} into {shown}:{written.line} ({what}; key id {keys.key_id(public)})")
    return 0


def existing_secret_keys(root: Path, skip: tuple[Path, ...]) -> dict[str, set[str]]:
    """Secret asset name -> its keys, read leniently (files that do not parse are skipped:
    this only guards against typos, ``validate`` reports broken files)."""
    from postline.assets.yamlfiles import find_files, read_documents

    found: dict[str, set[str]] = {}
    for path in find_files(root, skip=skip):
        docs, _problems = read_documents(path, str(path))
        for doc in docs:
            data = doc.data
            if isinstance(data, dict) and data.get("kind") == "Secret" \
                    and isinstance(data.get("name"), str):
                values = data.get("values")
                found.setdefault(data["name"], set()).update(
                    str(k) for k in (values if isinstance(values, dict) else {}))
    return found


def _refuse_likely_typo(root: Path, shown: str, asset: str, key: str,
                        skip: tuple[Path, ...]) -> None:
    """Raise ConfigError when ``asset`` (or ``key``) is new but close to an existing name.

    Creating is how ``secret set`` adds assets and keys, so a typo would silently store the
    value under a name nothing reads; an unattended job would then fail at its next login.
    """
    from postline.assets.validation import suggest

    existing = existing_secret_keys(root, skip)
    if asset not in existing:
        near = suggest(asset, existing)
        if near:
            raise ConfigError(f"no Secret asset named '{asset}' in {shown}{near}; nothing was "
                              "stored", hint=f"pass --create to add a new Secret asset "
                                             f"'{asset}'")
        return
    if key not in existing[asset]:
        near = suggest(key, existing[asset])
        if near:
            raise ConfigError(f"Secret '{asset}' has no key '{key}'{near}; nothing was "
                              "stored", hint=f"pass --create to add the new key '{key}'")


def cmd_secret_list(args) -> int:
    project = load_project(args.project)
    rows = []
    for e in project.entries("Secret"):
        values = e.doc.data.get("values")
        for key, stored in (values.items() if isinstance(values, dict) else ()):
            source = value_source(stored) if isinstance(stored, str) else ""
            if source not in ("sealed", "env", "file"):
                where, source = "INVALID: plaintext or unknown form (value not shown)", "invalid"
            elif source == "sealed":
                where = "sealed"
            else:
                where = stored
            rows.append({"asset": e.name, "key": str(key), "source": source, "stored_as": where,
                         "file": e.doc.file, "line": e.doc.line_of(("values", key))})
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no secrets in {args.project} (add one: postline secret set {args.project} "
              "ASSET KEY)")
        return 0
    from rich.table import Table

    table = Table(title=f"Secrets in {args.project} (values never shown)", title_justify="left")
    for col in ("Asset", "Key", "Stored as", "Location"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["asset"], r["key"], r["stored_as"], f"{r['file']}:{r['line']}")
    console().print(table)
    return 0


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def register(sub) -> None:
    """Add ``keys create`` and ``secret set|list`` to the ``postline`` parser."""
    kp = _parser(sub, "keys", "manage the key pair that protects a project's secrets",
                 "  postline keys create examples/local")
    kp.set_defaults(handler=lambda _args: _usage(kp))
    ksub = kp.add_subparsers(dest="keys_command", metavar="COMMAND")
    p = _parser(ksub, "create", "make a key pair: public key into the project, private key "
                "into a 0600 file",
                "  postline keys create examples/local\n"
                "  postline keys create . --key-file /run/secrets/postline.key --force\n\n"
                "The private key goes to --key-file, else $POSTLINE_KEY_FILE, else\n"
                "~/.config/postline/keys/<key-id>.key; the public key to PROJECT/postline.pub.")
    p.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    p.add_argument("--key-file", help="where to write the private key")
    p.add_argument("--force", action="store_true",
                   help="replace existing keys (secrets sealed to the old key become unreadable)")
    p.set_defaults(handler=cmd_keys_create)

    sp = _parser(sub, "secret", "set and list secret values (never shown)",
                 "  postline secret set examples/local DemoSecrets password\n"
                 "  postline secret list examples/local")
    sp.set_defaults(handler=lambda _args: _usage(sp))
    ssub = sp.add_subparsers(dest="secret_command", metavar="COMMAND")
    p = _parser(ssub, "set", "seal a value into a Secret asset (read from a prompt or stdin)",
                "  postline secret set examples/local DemoSecrets password\n"
                "  printf %s \"$PASSWORD\" | postline secret set examples/local DemoSecrets "
                "password\n\n"
                "The value is never taken from the command line. Only the project's public key\n"
                "is needed; the Secret asset is created in secrets.yaml if it does not exist.\n"
                "A new asset or key whose name is close to an existing one is refused as a\n"
                "likely typo unless --create is given.")
    p.add_argument("project", help="project directory")
    p.add_argument("asset", help="Secret asset name")
    p.add_argument("key", help="key within the asset")
    p.add_argument("--create", action="store_true",
                   help="allow a new asset or key even when its name is close to an existing "
                        "one")
    p.set_defaults(handler=cmd_secret_set)
    p = _parser(ssub, "list", "list Secret assets and keys with where each value is stored",
                "  postline secret list examples/local\n  postline secret list . --json")
    p.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    p.add_argument("--json", action="store_true", help="machine-readable list")
    p.set_defaults(handler=cmd_secret_list)
