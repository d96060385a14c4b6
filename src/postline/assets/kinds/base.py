"""The base of every asset model, references between assets, and the kind registry.

A kind is a frozen pydantic model registered with :func:`register_kind`. The loader knows
nothing about particular kinds: it looks the ``kind`` key up here. References between assets
are declared on fields with :class:`Ref` metadata, e.g.::

    connection: Annotated[str, Ref("EmailConnection")]

and a key of a Secret asset with the :class:`SecretRef` type (``Asset.key``). The usage graph
and the reference check walk these declarations generically, so a new kind needs no change
to the loader, the validator or the usage command.

Other generic hooks a kind may use:

* :class:`Template` -- a run-time template field (``${mail:...}`` and ``${date:...}`` kept).
* :data:`ProjectPath` -- a file path; a relative one is made absolute against the project root.
* :func:`field_error` -- raise it from a model validator to point the error at one field
  (the message then carries that field's path and line).
* ``AssetModel.config_warnings()`` -- warnings for a valid asset (printed, never fatal).
* ``AssetModel.literal_fields`` -- top-level fields whose strings are not macro-expanded.
* ``shown_defaults()`` on any sub-model -- how ``postline show`` explains omitted fields.
* ``shown_values()`` on any sub-model -- what ``show`` prints instead of a value (a password
  inside a URL masked).
* ``AssetModel.one_per_project`` -- at most one asset of the kind (a second is an error).
* ``AssetModel.env_overrides`` -- top-level fields an environment variable replaces
  (``{"url": "POSTLINE_STATE_URL"}``); the loader applies them, ``show`` says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationInfo,
)
from pydantic_core import core_schema

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
AssetName = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=200)]


@dataclass(frozen=True)
class Ref:
    """Field metadata: the value names an asset of ``kind``."""

    kind: str


@dataclass(frozen=True)
class Template:
    """Field metadata: a run-time template such as an Email Source ``stream_name``.

    Macros with a prefix in ``runtime`` are kept at load time (text and all) and expanded
    per use with :func:`postline.assets.macros.expand`; the others expand at load time.
    ``${mail:...}`` is kept in every field, this adds ``${date:...}`` (the time of use).
    """

    runtime: tuple[str, ...] = ("mail", "date")


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
    def _validate(cls, value: Any) -> SecretRef:
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


class FieldError(ValueError):
    """A model-validator error about one field (``field`` is a dotted path below the model)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def field_error(field: str, message: str) -> FieldError:
    """An error to ``raise`` from a ``model_validator`` that points at ``field``."""
    return FieldError(field, message)


def _against_root(value: str | None, info: ValidationInfo) -> str | None:
    root = (info.context or {}).get("project_root")
    if not value:
        return value
    path = Path(value).expanduser()
    if root and not path.is_absolute():
        path = Path(root) / path
    return os.path.normpath(path)


# A file path in an asset; relative paths are taken relative to the project directory.
ProjectPath = Annotated[str, AfterValidator(_against_root)]


# (kind, name) -> the valid asset of that kind and name, or None
Lookup = Callable[[str, str], "AssetModel | None"]


@dataclass(frozen=True)
class ConfigWarning:
    """A setting that works but is probably not what the user meant."""

    field: str
    message: str


class AssetModel(BaseModel):
    """Common fields of every asset. Subclasses set ``kind`` as a Literal."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # Top-level fields whose string values are taken literally (no ${...} expansion).
    literal_fields: ClassVar[frozenset[str]] = frozenset()
    # At most one asset of this kind per project.
    one_per_project: ClassVar[bool] = False
    # Top-level field -> environment variable that replaces its value when set.
    env_overrides: ClassVar[dict[str, str]] = {}

    kind: str
    name: AssetName
    description: str | None = None

    def config_warnings(self) -> list[ConfigWarning]:
        """Warnings for this (valid) asset; kinds override this. Never raises."""
        return []

    def project_warnings(self, lookup: Lookup) -> list[ConfigWarning]:
        """Warnings that depend on other assets of the project (``lookup(kind, name)`` gives
        a valid asset or None); kinds override this. Never raises."""
        return []


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
