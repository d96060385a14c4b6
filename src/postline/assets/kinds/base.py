"""The base of every asset model, references between assets, and the kind registry.

A kind is a frozen pydantic model registered with :func:`register_kind`. The loader knows
nothing about particular kinds: it looks the ``kind`` key up here. References between assets
are declared on fields with :class:`Ref` metadata, e.g.::

    connection: Annotated[str, Ref("EmailConnection")]

and a key of a Secret asset with the :class:`SecretRef` type (``Asset.key``). The usage graph
and the reference check walk these declarations generically, so a new kind needs no change
to the loader, the validator or the usage command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
AssetName = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=200)]


@dataclass(frozen=True)
class Ref:
    """Field metadata: the value names an asset of ``kind``."""

    kind: str


class SecretRef(str):
    """A reference to one key of a Secret asset, written ``SecretAsset.key``.

    The asset name may itself contain dots; the key is what follows the last dot.
    """

    _pattern: ClassVar[re.Pattern[str]] = re.compile(r"^([A-Za-z0-9_.\-]+)\.([A-Za-z0-9_\-]+)$")

    @property
    def asset(self) -> str:
        return self.rsplit(".", 1)[0]

    @property
    def key(self) -> str:
        return self.rsplit(".", 1)[1]

    @classmethod
    def _validate(cls, value: Any) -> "SecretRef":
        if not isinstance(value, str) or not cls._pattern.match(value):
            raise ValueError("must name a key of a Secret asset as SecretAsset.key")
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(str))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema, handler):
        return {"type": "string", "pattern": cls._pattern.pattern}


class AssetModel(BaseModel):
    """Common fields of every asset. Subclasses set ``kind`` as a Literal."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: str
    name: AssetName
    description: str | None = None


_KINDS: dict[str, type[AssetModel]] = {}


def register_kind(model: type[AssetModel]) -> type[AssetModel]:
    """Class decorator: make ``model`` loadable under the name of its ``kind`` literal."""
    kind = model.model_fields["kind"].annotation.__args__[0]  # Literal["X"]
    _KINDS[kind] = model
    return model


def kind_model(kind: str) -> type[AssetModel] | None:
    """Return the model registered for ``kind``, or None."""
    _load_builtin_kinds()
    return _KINDS.get(kind)


def known_kinds() -> list[str]:
    """Names of every registered kind, sorted."""
    _load_builtin_kinds()
    return sorted(_KINDS)


def _load_builtin_kinds() -> None:
    # Importing the kinds package registers the built-in kinds (each module decorates itself).
    from postline.assets import kinds  # noqa: F401
