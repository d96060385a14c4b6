"""Environment: key/value variables for ``${lay:VAR}`` macros."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postline.assets.kinds.base import AssetModel, register_kind


@register_kind
class Environment(AssetModel):
    kind: Literal["Environment"]
    variables: dict[str, str] = Field(default_factory=dict)
