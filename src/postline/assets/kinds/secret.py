"""Secret: key/value entries whose values are sealed to the project's public key.

A value is either ``sealed:<base64 sealed box>`` (written by ``postline secret set``), or
names where the value comes from at run time: ``env:NAME`` or ``file:/path``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postline.assets.kinds.base import AssetModel, register_kind


@register_kind
class Secret(AssetModel):
    kind: Literal["Secret"]
    values: dict[str, str] = Field(default_factory=dict)
