"""Loading a project: files -> documents -> macro expansion -> validated models -> checks.

Generic over kinds: the ``kind`` key picks a model from the registry; everything else
(which fields to expand, where references are) comes from the models' annotations.
Every problem of the project is collected; nothing stops at the first one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from postline.assets import references
from postline.assets.context import build_context
from postline.assets.kinds.base import (
    AssetModel,
    Lookup,
    Ref,
    SecretRef,
    Template,
    kind_model,
    known_kinds,
)
from postline.assets.macros import MacroContext, MacroError, expand_tracked, has_macros
from postline.assets.problems import Problem, format_path
from postline.assets.secret_values import SecretValues
from postline.assets.secrets import PUBLIC_KEY_FILE, read_public_key
from postline.assets.typewalk import FoundRef, TypeAt, child
from postline.assets.validation import problems_from, suggest
from postline.assets.yamlfiles import RawDocument, display_path, find_files, read_documents
from postline.errors import ConfigError, SecretError
from postline.logs import MASK, register_secret

_HEADER = ("kind", "name")


@dataclass
class Entry:
    """One asset of the project: where it is, and its model when it is valid."""

    kind: str
    name: str
    doc: RawDocument
    model: AssetModel | None = None
    sensitive: frozenset = frozenset()   # data paths whose value came from a secret
    pending: bool = False                # uses a secret that can only be read at run time
    macro_sources: tuple = ()            # ((path, (kind, name, key)), ...) from macros
    raw_refs: tuple = ()                 # FoundRef from the data, for assets that are invalid
    overrides: tuple = ()                # ((field, env variable, value), ...) that replaced data

    @property
    def origins(self) -> dict[tuple, str]:
        """``{(field,): "from VARIABLE"}`` for the values the environment replaced."""
        return {(f,): f"from {var}" for f, var, _ in self.overrides}

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def location(self) -> str:
        return f"{self.doc.file}:{self.doc.line}"


@dataclass
class Loaded:
    """Everything :func:`load` found: assets, problems (errors and warnings), references."""

    root: Path
    entries: list[Entry]
    problems: list[Problem]
    secrets: SecretValues
    environments: list[tuple[str, Mapping]] = field(default_factory=list)
    references: list[references.Reference] = field(default_factory=list)
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def context(self, *, strict: bool) -> MacroContext:
        return build_context(environ=self.environ, environments=self.environments,
                             secrets=self.secrets, strict=strict)


def load(root: Path, *, shown_root: str, environ: Mapping[str, str],
         key_file: str | Path | None, state_dir: Path,
         overrides: Mapping[Path, str] | None = None) -> Loaded:
    """Load and check every asset under ``root``; ``overrides`` maps absolute file paths to
    the text to read instead of the file's (a file that does not exist yet is added), so
    the console can validate an edit before writing it.

    Raises ConfigError only when ``root`` is not a project directory.
    """
    overrides = overrides or {}
    if root.exists() and not root.is_dir():
        parent = os.path.dirname(shown_root.rstrip("/")) or "."
        raise ConfigError(f"{shown_root} is a file, not a project directory",
                          hint=f"pass the directory that holds the asset YAML files, e.g. "
                               f"{parent}")
    if not root.is_dir():
        raise ConfigError(f"project directory {shown_root} does not exist",
                          hint="pass the directory that holds the asset YAML files")
    files = find_files(root, skip=(state_dir,))
    files += sorted(p for p in overrides if p not in files)
    if not files:
        raise ConfigError(f"no asset files (*.yaml, *.yml) in {shown_root}",
                          hint="is this the project directory?")
    problems: list[Problem] = []
    docs: list[RawDocument] = []
    for path in files:
        shown = display_path(shown_root, path, root)
        found, bad = read_documents(path, shown, text=overrides.get(path))
        if found and not bad and not any(_meant_as_asset(d.data) for d in found):
            # other YAML beside the assets (Prometheus rules, CI files, compose files)
            problems.append(Problem(shown, 1, "skipped: no document in this file has a "
                                    "'kind', so it holds no assets (add 'kind:' if it should)",
                                    severity="note"))
            continue
        docs += found
        problems += bad
    if not docs and not any(p.severity != "note" for p in problems):
        raise ConfigError(f"no assets in {shown_root}: none of its {len(files)} YAML file(s) "
                          "has a document with a 'kind'", hint="is this the project directory?")
    entries = _entries(docs, problems)
    problems += _env_overrides(entries, environ, shown_root)
    try:
        public = read_public_key(root)
    except SecretError as exc:
        public = None
        problems.append(Problem(display_path(shown_root, root / PUBLIC_KEY_FILE, root), 1,
                                exc.message))
    secrets = SecretValues(entries=_raw_map(entries, "Secret", "values"), root=root,
                           public=public, key_file=key_file, environ=environ)
    envs = list(_raw_map(entries, "Environment", "variables").items())
    loaded = Loaded(root, entries, problems, secrets, envs, environ=environ)
    ctx = loaded.context(strict=False)
    for entry in entries:
        problems += build(entry, ctx, root)
    loaded.references = references.collect(entries)
    problems += references.check(entries, loaded.references, secrets)
    valid = {(e.kind, e.name): e.model for e in entries if e.model is not None}
    for entry in entries:
        problems += _warnings(entry, lambda kind, name: valid.get((kind, name)))
    return loaded


def _env_overrides(entries: list[Entry], environ: Mapping[str, str],
                   shown_root: str) -> list[Problem]:
    """Record on each entry the fields its kind lets the environment replace (the one place
    that reads those variables). Returns a warning per variable set for a kind the project
    does not have (it would silently do nothing)."""
    problems = []
    for kind in known_kinds():
        model = kind_model(kind)
        for name, var in (model.env_overrides if model else {}).items():
            value = environ.get(var)
            if not value:
                continue
            found = [e for e in entries if e.kind == kind]
            for e in found:
                e.overrides += ((name, var, value),)
            if not found:
                problems.append(Problem(shown_root, 0, f"{var} is set, but the project has no "
                                        f"{kind} asset, so it is ignored (add a {kind} to use "
                                        "it)", severity="warning"))
    return problems


def _meant_as_asset(data: Any) -> bool:
    """Whether a document is an asset, or one that forgot its ``kind``: a mapping with a
    ``kind`` or a ``name``. A file with no such document is not part of the project (see
    docs/assets.md, "What a project is")."""
    return isinstance(data, dict) and ("kind" in data or "name" in data)


def _entries(docs: list[RawDocument], problems: list[Problem]) -> list[Entry]:
    """Asset entries for documents with a known kind and a name; header problems reported."""
    entries: list[Entry] = []
    first: dict[tuple[str, str], Entry] = {}
    kinds = known_kinds()
    for doc in docs:
        data = doc.data
        if not isinstance(data, dict):
            problems.append(Problem(doc.file, doc.line, "a document must be a mapping with "
                                    "kind and name (one asset per document)"))
            continue
        kind, name = data.get("kind"), data.get("name")
        label = f"{kind}/{name}" if isinstance(kind, str) and name is not None else None
        if not isinstance(kind, str) or not kind:
            problems.append(Problem(doc.file, doc.line_of(("kind",)), f"missing kind (one of: "
                                    f"{', '.join(kinds)})", label, "kind"))
            continue
        if kind_model(kind) is None:
            problems.append(Problem(doc.file, doc.line_of(("kind",)),
                                    f"unknown kind '{kind}'{suggest(kind, kinds)}; known kinds: "
                                    f"{', '.join(kinds)}", label, "kind"))
            continue
        if name is None or name == "":
            problems.append(Problem(doc.file, doc.line, "missing name (letters, digits, '_', "
                                    "'-', '.')", f"{kind}/?", "name"))
            continue
        entry = Entry(kind, str(name), doc)
        other = first.get((kind, entry.name))
        if other is not None:
            problems.append(Problem(doc.file, doc.line_of(("name",)),
                                    f"duplicate name: {entry.label} is also defined at "
                                    f"{other.location}",  # the line `assets` shows
                                    entry.label, "name"))
            continue
        first[(kind, entry.name)] = entry
        single = next((e for e in entries if e.kind == kind), None)
        if single is not None and kind_model(kind).one_per_project:
            # kept as an entry (assets and show list it), but the project is invalid
            problems.append(Problem(doc.file, doc.line_of(("name",)),
                                    f"a project has at most one {kind}: {entry.label} here and "
                                    f"{single.label} at {single.location}; remove one",
                                    entry.label, "kind"))
        entries.append(entry)
    return entries


def _raw_map(entries: list[Entry], kind: str, key: str) -> dict[str, dict]:
    """Asset name -> the raw mapping under ``key`` (e.g. Secret ``values``), in project order."""
    out: dict[str, dict] = {}
    for e in entries:
        if e.kind == kind:
            raw = e.doc.data.get(key)
            out[e.name] = {str(k): v for k, v in raw.items() if isinstance(v, (str, int, float))} \
                if isinstance(raw, dict) else {}
    return out


def build(entry: Entry, ctx: MacroContext, root: Path, *, strict: bool = False) -> list[Problem]:
    """Expand macros in ``entry``'s data and validate it; sets ``entry.model``. Returns problems.

    With ``strict`` (run time), a secret that cannot be read raises SecretError instead.
    """
    model_cls = kind_model(entry.kind)
    if model_cls is None:
        raise ConfigError(f"{entry.kind} is not a kind postline knows",
                          hint=f"known kinds: {', '.join(known_kinds())}")
    state = _Expanding(entry, ctx, strict)
    data = {k: (v if k in _HEADER or k in model_cls.literal_fields
                else state.walk(v, _child(TypeAt(model_cls), k, entry.doc.data), (k,)))
            for k, v in entry.doc.data.items()}
    entry.sensitive = frozenset(state.sensitive)
    entry.pending = state.pending
    entry.macro_sources = tuple(state.sources)
    entry.raw_refs = tuple(state.refs)
    for name, _var, value in entry.overrides:
        data[name] = value
    try:
        model = model_cls.model_validate(data, context={"project_root": str(root)})
        # a macro that failed left its raw text behind: the asset is not usable
        entry.model = None if state.failed else model
    except ValidationError as exc:
        entry.model = None
        state.problems += problems_from(exc, model=model_cls, doc=entry.doc, asset=entry.label,
                                        skip=state.failed, redact=state.redact)
    for name, var, _value in entry.overrides:  # say where a wrong value came from
        state.problems = [dataclasses.replace(p, message=f"{p.message} (the value comes from "
                                              f"{var})") if p.field == name else p
                          for p in state.problems]
    return state.problems


def _child(at: TypeAt | None, key: Any, data: Any) -> TypeAt | None:
    return child(at, key, data) if at is not None else None


class _Expanding:
    """Walks raw data, expanding string scalars; records problems, secrets and sources."""

    def __init__(self, entry: Entry, ctx: MacroContext, strict: bool) -> None:
        self.entry, self.ctx, self.strict = entry, ctx, strict
        self.problems: list[Problem] = []
        self.failed: list[tuple] = []
        self.sensitive: set[tuple] = set()
        self.secret_texts: set[str] = set()
        self.sources: list = []
        self.refs: list[FoundRef] = []
        self.pending = False

    def walk(self, value: Any, at: TypeAt | None, path: tuple) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, _child(at, k, value), path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, _child(at, i, value), path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, str) and has_macros(value):
            value = self.expand(value, at, path)
        if isinstance(value, str) and at is not None:
            self._note_ref(value, at, path)
        return value

    def _note_ref(self, value: str, at: TypeAt, path: tuple) -> None:
        if at.tp is SecretRef and SecretRef._pattern.match(value):
            ref = SecretRef(value)
            self.refs.append(FoundRef(path, "Secret", ref.asset, ref.key))
        for meta in at.metadata:
            if isinstance(meta, Ref):
                self.refs.append(FoundRef(path, meta.kind, value))

    def expand(self, value: str, at: TypeAt | None, path: tuple) -> str:
        ctx = self.ctx
        for meta in at.metadata if at else ():
            if isinstance(meta, Template):
                ctx = ctx.deferring(*meta.runtime)
        try:
            exp = expand_tracked(value, ctx)
        except SecretError:
            if self.strict:
                raise
            exp = None
            message = "a secret cannot be read"
        except MacroError as exc:
            exp, message = None, exc.message
        if exp is None:
            self.failed.append(path)
            self.problems.append(Problem(self.entry.doc.file, self.entry.doc.line_of(path),
                                         message, self.entry.label, format_path(path)))
            return value
        if exp.sensitive:
            self.sensitive.add(path)
            if exp.text != MASK:
                self.secret_texts.add(exp.text)
                register_secret(exp.text)
        self.pending |= exp.pending
        self.sources += [(path, s) for s in exp.sources]
        return exp.text

    def redact(self, text: str) -> str:
        for secret in sorted(self.secret_texts, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text


def _warnings(entry: Entry, lookup: Lookup) -> list[Problem]:
    if entry.model is None:
        return []
    out = []
    for w in entry.model.config_warnings() + entry.model.project_warnings(lookup):
        path = tuple(w.field.split(".")) if w.field else ()
        out.append(Problem(entry.doc.file, entry.doc.line_of(path), w.message, entry.label,
                           w.field or None, severity="warning"))
    return out
