"""Turning pydantic's errors into one-line problems a user can act on.

Each pydantic error becomes ``file:line: Kind/name: field.path: what is wrong``, with the
line of the offending key (or of the nearest parent when a key is missing), the nearest
valid key for typos, and for fields that belong to another member of a discriminated
union (a credential ``type``) the type they belong to.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from postline.assets.kinds.base import FieldError
from postline.assets.problems import Problem, format_path
from postline.assets.typewalk import LocInfo, valid_keys, walk_loc
from postline.assets.yamlfiles import RawDocument


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def problems_from(exc: ValidationError, *, model: type[BaseModel], doc: RawDocument,
                  asset: str, skip: Iterable[tuple] = (),
                  redact: Callable[[str], str] = lambda s: s) -> list[Problem]:
    """One :class:`Problem` per pydantic error, in document order.

    ``skip`` holds paths that already have a problem (a macro that failed); errors at or
    below them are dropped. ``redact`` masks sensitive text in the messages.
    """
    skip = tuple(skip)
    sensitive_top = getattr(model, "literal_fields", frozenset())
    out: list[Problem] = []
    seen: set[tuple] = set()
    for err in exc.errors():
        info = walk_loc(model, tuple(err["loc"]))
        path, message = _describe(err, info, hide_input=bool(info.path)
                                  and info.path[0] in sensitive_top)
        if any(path[:len(s)] == s for s in skip) or (path, message) in seen:
            continue
        seen.add((path, message))
        out.append(Problem(doc.file, doc.line_of(path), redact(message), asset,
                           format_path(path) or None))
    return sorted(out, key=lambda p: p.line)


def _shown(value: Any, hide: bool) -> str:
    if hide:
        return "a value that is not shown"
    if value is None:
        return "nothing (empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "list": "a list", "tuple": "a list", "set": "a list", "dict": "a mapping (key: value)",
    "model": "a mapping (key: value)", "model_attributes": "a mapping (key: value)",
}


def _describe(err: dict, info: LocInfo, hide_input: bool) -> tuple[tuple, str]:
    """(data path, message) for one pydantic error."""
    kind, path, ctx = err["type"], info.path, err.get("ctx") or {}
    got = _shown(err.get("input"), hide_input)
    if kind == "extra_forbidden":
        return path, _unknown_key(str(path[-1]), info)
    if kind == "missing":
        return path, "missing (this field is required)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = info.target.discriminator if info.target else "type"
        tags = list(info.target.members()) if info.target else []
        choices = ", ".join(tags)
        if kind == "union_tag_not_found":
            return path + (disc,), f"missing (one of: {choices})"
        tag = str(ctx.get("tag"))
        return path + (disc,), f"'{tag}' is not allowed here; expected one of: {choices}" + \
            suggest(tag, tags)
    if kind == "literal_error":
        choices = info.target.literals() if info.target else []
        expected = ", ".join(f"'{c}'" for c in choices) or ctx.get("expected", "")
        return path, f"expected one of {expected}, got {got}" + (
            "" if hide_input else suggest(str(err.get("input")), choices))
    if kind in ("value_error", "assertion_error"):
        error = ctx.get("error")
        if isinstance(error, FieldError):
            return path + tuple(error.field.split(".")), str(error)
        return path, str(error) if error is not None else err["msg"]
    if kind == "string_pattern_mismatch":
        if "[key]" in err["loc"]:
            # key names are never secret, only values are
            return path, (f"invalid key name {_shown(err.get('input'), False)} "
                          "(use letters, digits, '_', '-')")
        if path == ("name",):
            return path, (f"invalid name {got}: use letters, digits, '_', '-' and '.' "
                          "(no spaces)")
        return path, f"{got} does not match the pattern {ctx.get('pattern')}"
    for prefix, word in _TYPE_WORDS.items():
        if kind in (f"{prefix}_type", f"{prefix}_parsing", f"{prefix}_from_float"):
            return path, f"expected {word}, got {got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        return path, f"must be {op} {bound}, got {got}"
    if kind == "too_short":
        if isinstance(err.get("input"), str):
            return path, "must not be empty"
        return path, f"needs at least {ctx.get('min_length', 1)} item(s)"
    if kind == "string_too_short":
        return path, "must not be empty"
    if kind == "string_too_long":
        return path, f"is too long (at most {ctx.get('max_length')} characters)"
    return path, err["msg"][0].lower() + err["msg"][1:]


def _unknown_key(key: str, info: LocInfo) -> str:
    model = info.parent.model if info.parent else None
    keys = [k for k in valid_keys(model)] if model else []
    text = f"unknown key '{key}'"
    if info.union is not None and info.union_field == info.path[:-1]:
        disc, tag = info.union.discriminator, info.union_tag
        owners = [t for t, m in info.union.members().items() if key in valid_keys(m)]
        if owners:
            return (f"'{key}' is not used with {disc}: {tag} (it belongs to {disc}: "
                    f"{' / '.join(owners)})")
        keys = [k for k in keys if k != disc] + [disc]
    hint = suggest(key, keys)
    if hint:
        return text + hint
    return text + f" (valid keys: {', '.join(keys)})" if keys else text
