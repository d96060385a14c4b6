"""Walking asset models by their type annotations, generically.

The validator uses this to turn pydantic's error locations into data paths (dropping the
tags pydantic inserts for discriminated unions) and to find the valid keys at any path;
the usage graph uses it to find every :class:`Ref` and :class:`SecretRef` in a model.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from postline.assets.kinds.base import Ref, SecretRef


@dataclass(frozen=True)
class TypeAt:
    """The (unwrapped) type expected at some path, with its Annotated metadata."""

    tp: Any
    metadata: tuple = ()
    discriminator: str | None = None

    @property
    def model(self) -> type[BaseModel] | None:
        return self.tp if isinstance(self.tp, type) and issubclass(self.tp, BaseModel) else None

    def members(self) -> dict[str, type[BaseModel]]:
        """Tag -> model of a discriminated union (empty for anything else)."""
        if not self.discriminator:
            return {}
        out: dict[str, type[BaseModel]] = {}
        for arg in typing.get_args(self.tp):
            arg = unwrap(arg).tp
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                field = arg.model_fields.get(self.discriminator)
                for tag in typing.get_args(field.annotation) if field else ():
                    out[str(tag)] = arg
        return out

    def literals(self) -> list[str]:
        """The allowed values of a Literal type (empty for anything else)."""
        if typing.get_origin(self.tp) is typing.Literal:
            return [str(a) for a in typing.get_args(self.tp)]
        return []


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def unwrap(tp: Any, metadata: tuple = (), discriminator: str | None = None) -> TypeAt:
    """Strip ``Annotated`` (collecting its metadata) and ``Optional``."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            args = typing.get_args(tp)
            tp, extra = args[0], tuple(args[1:])
            metadata += extra
            for m in extra:
                discriminator = getattr(m, "discriminator", None) or discriminator
            continue
        if _is_union(tp):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return TypeAt(tp, metadata, discriminator if isinstance(discriminator, str) else None)


def field_type(model: type[BaseModel], name: str) -> TypeAt | None:
    """The type of field ``name`` of ``model`` (by name or alias), or None if there is none."""
    info = model.model_fields.get(name)
    if info is None:
        info = next((f for f in model.model_fields.values() if f.alias == name), None)
    if info is None:
        return None
    disc = info.discriminator if isinstance(info.discriminator, str) else None
    return unwrap(info.annotation, tuple(info.metadata), disc)


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The keys a mapping for ``model`` may have (field names, and aliases where set)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def child(at: TypeAt, key: Any, data: Any = None) -> TypeAt | None:
    """The type at ``key`` below ``at``; ``data`` (the value at ``at``) picks union members."""
    if at.discriminator and isinstance(data, dict):
        member = at.members().get(str(data.get(at.discriminator)))
        if member is None:
            return None
        at = TypeAt(member)
    if at.model is not None:
        return field_type(at.model, str(key))
    origin = typing.get_origin(at.tp)
    args = typing.get_args(at.tp)
    if origin in (list, tuple, set, frozenset) and args:
        return unwrap(args[0])
    if origin is dict and len(args) == 2:
        return unwrap(args[1])
    return None


@dataclass(frozen=True)
class LocInfo:
    """Where a pydantic error location points, in terms of the user's data."""

    path: tuple                       # keys/indexes as written in YAML
    parent: TypeAt | None             # type of the mapping holding the last key
    target: TypeAt | None             # type at the path itself
    union_field: tuple | None = None  # path of the discriminated union the parent belongs to
    union: TypeAt | None = None
    union_tag: str | None = None      # the member chosen there (e.g. credential type "secret")


def walk_loc(model: type[BaseModel], loc: tuple) -> LocInfo:
    """Follow a pydantic error ``loc`` through ``model``, dropping union tags and ``[key]``."""
    at: TypeAt | None = TypeAt(model)
    parent: TypeAt | None = None
    path: list = []
    union_field = union = tag = None
    for elem in loc:
        if at is not None and at.discriminator and str(elem) in at.members():
            union_field, union, tag = tuple(path), at, str(elem)
            at = TypeAt(at.members()[str(elem)])
            continue
        if elem == "[key]":
            continue
        if at is not None and _is_union(at.tp) and isinstance(elem, str) and (
                "[" in elem or elem in {"str", "int", "float", "bool", "none"}):
            continue  # pydantic names the union member it tried; not part of the data path
        parent = at
        path.append(elem)
        at = child(at, elem) if at is not None else None
    return LocInfo(tuple(path), parent, at, union_field, union, tag)


@dataclass(frozen=True)
class FoundRef:
    """A reference found in a model: the field path and the asset (and Secret key) it names."""

    path: tuple
    kind: str
    name: str
    key: str | None = None


def find_refs(value: Any, at: TypeAt | None = None, path: tuple = ()) -> Iterator[FoundRef]:
    """Every :class:`Ref`-annotated string and :class:`SecretRef` inside ``value``."""
    if isinstance(value, SecretRef):
        yield FoundRef(path, "Secret", value.asset, value.key)
        return
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from find_refs(getattr(value, name), field_type(type(value), name),
                                 path + (name,))
        return
    if at is not None and _is_union(at.tp):
        # e.g. ``Annotated[str, Ref(..)] | list[...]``: continue with the member that fits
        for arg in typing.get_args(at.tp):
            cand = unwrap(arg, at.metadata)
            base = typing.get_origin(cand.tp) or cand.tp
            if isinstance(base, type) and isinstance(value, base):
                at = cand
                break
    if isinstance(value, str):
        for meta in at.metadata if at else ():
            if isinstance(meta, Ref):
                yield FoundRef(path, meta.kind, value)
        return
    if isinstance(value, (list, tuple)):
        item = child(at, 0) if at else None
        for i, v in enumerate(value):
            yield from find_refs(v, item, path + (i,))
    elif isinstance(value, dict):
        item = child(at, "") if at else None
        for k, v in value.items():
            yield from find_refs(v, item, path + (k,))
