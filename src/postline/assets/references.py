"""References between assets: collecting them, checking them, and the usage graph.

References come from the models' annotations (:class:`Ref` fields and :class:`SecretRef`
values) and from macros (``${sec:...}`` and ``${lay:...}`` name the asset that supplied a
value), so a new kind needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from postline.assets.kinds.base import kind_model
from postline.assets.problems import Problem, format_path
from postline.assets.typewalk import find_refs
from postline.assets.validation import suggest

if TYPE_CHECKING:
    from postline.assets.loader import Entry
    from postline.assets.secret_values import SecretValues


@dataclass(frozen=True)
class Reference:
    """Asset ``source``'s ``field`` refers to ``target_kind/target`` (``key``: a Secret key)."""

    source_kind: str
    source: str
    field: str
    target_kind: str
    target: str
    key: str | None = None
    via_macro: bool = False
    file: str = ""
    line: int = 0

    @property
    def source_label(self) -> str:
        return f"{self.source_kind}/{self.source}"

    @property
    def target_text(self) -> str:
        return f"{self.target}.{self.key}" if self.key else self.target

    def as_dict(self) -> dict:
        return {"kind": self.source_kind, "name": self.source, "field": self.field,
                "target_kind": self.target_kind, "target": self.target, "key": self.key,
                "via_macro": self.via_macro, "file": self.file, "line": self.line}


def collect(entries: list[Entry]) -> list[Reference]:
    """Every reference made by the valid assets, in project order."""
    out: list[Reference] = []
    for e in entries:
        # A valid model is walked by its types; an invalid one by its data (so a broken
        # reference is still reported in the same run as the asset's other errors).
        found = find_refs(e.model) if e.model is not None else e.raw_refs
        for ref in found:
            out.append(Reference(e.kind, e.name, format_path(ref.path), ref.kind, ref.name,
                                 ref.key, False, e.doc.file, e.doc.line_of(ref.path)))
        for path, (kind, name, key) in e.macro_sources:
            out.append(Reference(e.kind, e.name, format_path(path), kind, name, key, True,
                                 e.doc.file, e.doc.line_of(path)))
    return list(dict.fromkeys(out))


def check(entries: list[Entry], refs: list[Reference],
          secrets: SecretValues) -> list[Problem]:
    """Problems for references to assets or Secret keys that do not exist (and warnings)."""
    names: dict[str, list[str]] = {}
    for e in entries:
        names.setdefault(e.kind, []).append(e.name)
    out: list[Problem] = []
    unavailable: dict[tuple[str, str], list[str]] = {}
    for r in refs:
        if r.via_macro:
            continue  # the macro itself already failed if its target was missing
        label = f"{r.source_kind}/{r.source}"
        if kind_model(r.target_kind) is None:
            continue  # a kind that a later module will add; nothing to check against yet
        candidates = names.get(r.target_kind, [])
        if r.target not in candidates:
            elsewhere = [k for k, ns in names.items() if r.target in ns]
            note = f" ({r.target} is a {elsewhere[0]})" if elsewhere else suggest(r.target,
                                                                                   candidates)
            out.append(Problem(r.file, r.line, f"no {r.target_kind} named '{r.target}'{note}",
                               label, r.field))
            continue
        if r.key is None:
            continue
        stored = secrets.stored(r.target, r.key)
        if stored is None:
            keys = [k for k in _keys(entries, r.target)]
            out.append(Problem(r.file, r.line, f"Secret '{r.target}' has no key '{r.key}'"
                               f"{suggest(r.key, keys)}; set it with 'postline secret set PROJECT "
                               f"{r.target} {r.key}'", label, r.field))
        elif not secrets.readable(r.target, r.key) and not stored.startswith("sealed:"):
            unavailable.setdefault((r.target, r.key), []).append(label)
    for (asset, key), users in unavailable.items():
        stored = secrets.stored(asset, key) or ""
        source, _, where = stored.partition(":")
        what = f"environment variable {where} is not set" if source == "env" \
            else f"file {where} does not exist"
        entry = next(e for e in entries if e.kind == "Secret" and e.name == asset)
        out.append(Problem(entry.doc.file, entry.doc.line_of(("values", key)),
                           f"{what} here; it is read at run time by "
                           f"{', '.join(dict.fromkeys(users))}", entry.label,
                           f"values.{key}", severity="warning"))
    return out


def _keys(entries: list[Entry], secret: str) -> list[str]:
    for e in entries:
        if e.kind == "Secret" and e.name == secret and isinstance(e.doc.data.get("values"), dict):
            return [str(k) for k in e.doc.data["values"]]
    return []


def usage(refs: list[Reference], kind: str, name: str) -> list[Reference]:
    """The references that point at ``kind/name``, in project order."""
    return [r for r in refs if r.target_kind == kind and r.target == name]
