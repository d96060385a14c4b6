"""Environment: key/value variables for ``${lay:VAR}`` (and bare ``${VAR}``) macros.

::

    kind: Environment
    name: Dev
    variables:
      IMAP_HOST: 127.0.0.1
      IMAP_PORT: 10993            # numbers and booleans are taken as their YAML text
      MAILBOX: ${env:USER:-demo}@example.test   # values may use macros themselves
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from postline.assets.kinds.base import AssetModel, register_kind

VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")]


def scalar_text(value: Any) -> Any:
    """YAML scalars as the text a user wrote: ``true`` -> "true", ``993`` -> "993"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


@register_kind
class Environment(AssetModel):
    kind: Literal["Environment"]
    variables: dict[VariableName, Annotated[str, BeforeValidator(scalar_text)]] = Field(
        default_factory=dict)
