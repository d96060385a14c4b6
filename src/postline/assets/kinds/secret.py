"""Secret: key/value entries whose values are sealed to the project's public key.

A value is either ``sealed:<base64 sealed box>`` (written by ``postline secret set``), or
names where the value comes from at run time: ``env:NAME`` or ``file:/path`` (a relative
path is taken relative to the project directory). Plaintext values are refused, and no
error message ever repeats a value. Values are never macro-expanded.

::

    kind: Secret
    name: MailSecrets
    values:
      password: sealed:Jf3k...==
      client_secret: env:MAIL_CLIENT_SECRET
      api_token: file:/run/secrets/api-token
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from postline.assets.kinds.base import AssetModel, register_kind
from postline.assets.kinds.environment import scalar_text

SecretKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]+$")]
SOURCES = ("sealed", "env", "file")


def _check_value(value: str) -> str:
    source, sep, rest = value.partition(":")
    if not sep or source not in SOURCES:
        raise ValueError("must be sealed:<...> (run 'postline secret set'), env:NAME or "
                         "file:/path; plaintext secrets are not allowed")
    if not rest.strip():
        raise ValueError(f"{source}: needs a value after the colon")
    return value


def value_source(value: str) -> str:
    """``"sealed"``, ``"env"`` or ``"file"``: where a stored secret value comes from."""
    return value.partition(":")[0]


@register_kind
class Secret(AssetModel):
    kind: Literal["Secret"]
    literal_fields: ClassVar[frozenset[str]] = frozenset({"values"})
    values: dict[SecretKey, Annotated[str, BeforeValidator(scalar_text),
                                      AfterValidator(_check_value)]] = Field(
        default_factory=dict)
