"""The load-time macro context of a project: ``env:``, ``lay:``, ``sec:`` (and ``date:``).

* ``env:`` reads the environment mapping handed to :func:`postline.project.open_project`.
* ``lay:VAR`` takes VAR from the Environment assets in project order (files sorted by path,
  documents top to bottom); a later asset wins. ``lay:Asset.VAR`` reads one asset. Values
  may use macros themselves; a cycle is an error.
* ``sec:Asset.key`` reads a Secret key; ``sec:key`` finds the one Secret asset with that key
  (more than one is an error: name the asset). Secret values are marked sensitive.

When a secret cannot be read yet (sealed, with no private key here; ``env:`` not set),
validation still passes: a non-strict context returns a masked placeholder marked
``pending``, and the value is read for real when the asset is used (strict context).
"""

from __future__ import annotations

from collections.abc import Mapping

from postline.assets.kinds.environment import scalar_text
from postline.assets.macros import MacroContext, MacroError, Resolved, expand_tracked
from postline.assets.secret_values import SecretValues
from postline.errors import SecretError
from postline.logs import MASK


def build_context(*, environ: Mapping[str, str],
                  environments: list[tuple[str, Mapping[str, object]]],
                  secrets: SecretValues, strict: bool) -> MacroContext:
    """A :class:`MacroContext` for the project. ``strict`` reads secrets or raises SecretError."""
    envs = [(name, {str(k): str(scalar_text(v)) for k, v in (variables or {}).items()
                    if v is not None}) for name, variables in environments]
    resolving: list[str] = []
    ctx_box: list[MacroContext] = []

    def lay(key: str) -> Resolved | None:
        asset, dot, var = key.rpartition(".")
        if dot and any(n == asset for n, _ in envs):
            hits = [(n, v[var]) for n, v in envs if n == asset and var in v]
        else:
            hits = [(n, v[key]) for n, v in envs if key in v]
            var = key
        if not hits:
            return None
        name, raw = hits[-1]  # later Environment assets win
        label = f"{name}.{var}"
        if label in resolving:
            chain = " -> ".join([*resolving[resolving.index(label):], label])
            raise MacroError(f"macro cycle between Environment variables: {chain}")
        resolving.append(label)
        try:
            exp = expand_tracked(raw, ctx_box[0])
        finally:
            resolving.pop()
        return Resolved(exp.text, exp.sensitive, ("Environment", name, var), exp.pending)

    def sec(key: str) -> Resolved | None:
        asset, dot, k = key.rpartition(".")
        if dot and secrets.stored(asset, k) is not None:
            pass
        else:
            owners = secrets.assets_with(key)
            if not owners:
                return None
            if len(owners) > 1:
                raise MacroError(f"secret key '{key}' is in several Secret assets "
                                 f"({', '.join(owners)}); write ${{sec:{owners[0]}.{key}}}")
            asset, k = owners[0], key
        source = ("Secret", asset, k)
        if not strict and not secrets.readable(asset, k):
            return Resolved(MASK, sensitive=True, source=source, pending=True)
        try:
            return Resolved(secrets.read(asset, k), sensitive=True, source=source)
        except SecretError:
            if strict:
                raise
            return Resolved(MASK, sensitive=True, source=source, pending=True)

    def lay_names() -> list[str]:
        return [n for _, v in envs for n in v] + [f"{a}.{n}" for a, v in envs for n in v]

    def sec_names() -> list[str]:
        # key names only, never values; both spellings, ${sec:key} and ${sec:Asset.key}
        return [n for a in secrets.asset_names() for k in secrets.keys_of(a)
                for n in (k, f"{a}.{k}")]

    ctx = MacroContext(handlers={"env": environ.get, "lay": lay, "sec": sec},
                       names={"env": environ.keys, "lay": lay_names, "sec": sec_names})
    ctx_box.append(ctx)
    return ctx
