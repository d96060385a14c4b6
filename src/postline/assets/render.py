"""What ``postline show`` prints: a resolved asset with defaults made visible, secrets masked.

Pure functions over an entry: they never read a secret. Values that came from secrets
(``${sec:...}``) print as ``***``; a ``SecretRef`` prints as the reference plus where its
value is stored (``sealed``, ``env:NAME``, ``file:/path``), never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from postline.assets.kinds.base import SecretRef
from postline.assets.problems import format_path
from postline.logs import MASK

StoredAs = Callable[[str, str], str | None]  # (asset, key) -> "sealed" / "env:X" / None


@dataclass(frozen=True)
class Shown:
    """One line of ``show``: the path, the value (masked), and a note on where it came from."""

    path: tuple
    value: Any           # JSON-ready; None for a mapping or list header
    note: str = ""
    container: str = ""  # "map" or "list" for a header line


def walk(model: BaseModel, *, sensitive: frozenset, stored_as: StoredAs,
         origins: dict[tuple, str] | None = None) -> list[Shown]:
    """The lines of ``model`` in field order, with defaults explained and secrets masked.

    ``origins`` notes where a value came from instead of the file (``{("url",):
    "from POSTLINE_STATE_URL"}``).
    """
    out: list[Shown] = []
    _model(model, (), sensitive, stored_as, out)
    if origins:
        out = [Shown(s.path, s.value, f"({origins[s.path]})", s.container)
               if s.path in origins else s for s in out]
    return out


def _model(m: BaseModel, path: tuple, sens: frozenset, stored_as: StoredAs,
           out: list[Shown]) -> None:
    explained = m.shown_defaults() if hasattr(m, "shown_defaults") else {}
    replaced = m.shown_values() if hasattr(m, "shown_values") else {}
    for name, info in type(m).model_fields.items():
        value = getattr(m, name)
        here = path + (info.alias or name,)   # the key as written in YAML (from, not from_)
        if name in explained and name not in m.model_fields_set:
            shown, why = explained[name]
            out.append(Shown(here, shown, f"({why})"))
            continue
        is_default = name not in m.model_fields_set
        if value is None and is_default:
            continue  # an optional field left out: nothing to show
        if name in replaced and here not in sens:
            out.append(Shown(here, replaced[name], "(default)" if is_default else ""))
            continue
        _value(value, here, sens, stored_as, out, "(default)" if is_default else "")


def _value(value: Any, path: tuple, sens: frozenset, stored_as: StoredAs,
           out: list[Shown], note: str) -> None:
    if path in sens:
        out.append(Shown(path, MASK, "(secret)"))
    elif isinstance(value, BaseModel):
        out.append(Shown(path, None, note, "map"))
        _model(value, path, sens, stored_as, out)
    elif isinstance(value, SecretRef):
        where = stored_as(value.asset, value.key)
        out.append(Shown(path, str(value), f"({where})" if where else note))
    elif isinstance(value, dict):
        out.append(Shown(path, None if value else {}, note, "map" if value else ""))
        for k, v in value.items():
            _value(v, path + (k,), sens, stored_as, out, "")
    elif isinstance(value, (list, tuple)):
        if all(not isinstance(v, (BaseModel, dict, list)) for v in value) and \
                not any(path + (i,) in sens for i in range(len(value))):
            out.append(Shown(path, list(value), note))
        else:
            out.append(Shown(path, None, note, "list"))
            for i, v in enumerate(value):
                _value(v, path + (i,), sens, stored_as, out, "")
    else:
        out.append(Shown(path, value, note))


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if value == {}:
        return "{}"
    text = str(value)
    return text if text and text.strip() == text else repr(text)


def as_text(lines: list[Shown]) -> str:
    """YAML-like text: ``  port: 993 (default for imap + tls)``."""
    rows = []
    for s in lines:
        key = s.path[-1]
        indent = "  " * (len(s.path) - 1)
        label = f"- [{key}]" if isinstance(key, int) else f"{key}:"
        value = "" if s.container else " " + _scalar(s.value)
        rows.append(f"{indent}{label}{value}" + (f" {s.note}" if s.note else ""))
    return "\n".join(rows)


def as_json(lines: list[Shown]) -> tuple[dict, dict]:
    """(the resolved asset as nested JSON data, {field.path: note} for defaulted values)."""
    root: dict = {}
    notes: dict[str, str] = {}
    for s in lines:
        parent: Any = root
        for part in s.path[:-1]:
            parent = parent[part]
        value = {} if s.container == "map" else [] if s.container == "list" else s.value
        if isinstance(parent, list):
            parent.append(value)
        else:
            parent[s.path[-1]] = value
        if s.note:
            notes[format_path(s.path)] = s.note.strip("()")
    return root, notes
