"""``${...}`` macros: a pure expander with a pluggable table of prefix handlers.

Syntax (docs/assets.md, "Macros")::

    ${VAR}              bare name: OS environment, then Environment assets, then Secrets
                        (each later layer wins over an earlier one that also defines VAR)
    ${env:VAR}          OS environment only
    ${lay:VAR}          Environment assets (``${lay:Asset.VAR}`` picks one asset)
    ${sec:Asset.key}    a key of a Secret asset (``${sec:key}``: searched in every Secret)
    ${date:PATTERN}     the current UTC time (see :mod:`postline.assets.datefmt`)
    ${NAME:-default}    default when NAME is undefined or empty; may contain macros
    ${env:${lay:WHICH}} nesting: the inner macro gives the name of the outer one
    $${                 a literal ``${``

The expander knows no sources itself: a :class:`MacroContext` maps each prefix to a
handler ``key -> str | Resolved | None`` (None = undefined). The project loader builds the
load-time context (env, lay, sec, date); code that runs later adds prefixes of its own::

    ctx = project.macro_context().with_prefix("mail", {"folder": "INBOX", "from": sender})
    stream = expand(source.stream_name, ctx)

Prefixes in ``context.deferred`` (by default ``mail``) are left untouched at load time, text
and all, so a value like ``orders-${mail:received}`` survives loading and is expanded per
mail by the Email Source. In such a value the ``$${`` escapes are kept as ``$${`` so that the
second expansion still yields a literal ``${``.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from postline.assets.datefmt import DatePatternError, format_date
from postline.errors import ConfigError

_ESC = "\ue000"  # stands for a literal "${" until we know whether to re-escape it


class MacroError(ConfigError):
    """A macro cannot be expanded: syntax error, undefined name, unknown prefix, cycle."""


@dataclass(frozen=True)
class Resolved:
    """A handler's answer with provenance.

    ``sensitive`` values (secrets) are masked in output; ``source`` names the asset that
    supplied the value as ``(kind, name, key)`` for the usage graph; ``pending`` marks a
    placeholder for a value that can only be read at run time (a sealed secret without
    the private key at hand).
    """

    value: str
    sensitive: bool = False
    source: tuple[str, str, str] | None = None
    pending: bool = False


Handler = Callable[[str], str | Resolved | None]


@dataclass(frozen=True)
class Expansion:
    """The result of :func:`expand_tracked`."""

    text: str
    sensitive: bool = False
    sources: tuple[tuple[str, str, str], ...] = ()
    pending: bool = False
    deferred: bool = False


@dataclass(frozen=True)
class MacroContext:
    """Where macro values come from. Immutable: ``with_*`` methods return a new context.

    ``bare`` lists the prefixes consulted for a bare ``${VAR}``, lowest precedence first.
    ``names`` maps a prefix to a callable listing the names it knows; it only serves the
    did-you-mean of an undefined macro (a handler alone cannot be asked what it has).
    """

    handlers: Mapping[str, Handler] = field(default_factory=dict)
    names: Mapping[str, Callable[[], Iterable[str]]] = field(default_factory=dict)
    bare: tuple[str, ...] = ("env", "lay", "sec")
    deferred: frozenset[str] = frozenset({"mail"})
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def with_prefix(self, prefix: str,
                    source: Mapping[str, str] | Handler) -> MacroContext:
        """A context that also resolves ``${prefix:key}`` (no longer deferred)."""
        handler = source.get if isinstance(source, Mapping) else source
        names = dict(self.names)
        if isinstance(source, Mapping):
            names[prefix] = source.keys
        else:
            names.pop(prefix, None)
        return replace(self, handlers={**self.handlers, prefix: handler}, names=names,
                       deferred=self.deferred - {prefix})

    def deferring(self, *prefixes: str) -> MacroContext:
        """A context that leaves ``${prefix:...}`` in place for a later expansion."""
        return replace(self, deferred=self.deferred | set(prefixes))

    def prefixes(self) -> list[str]:
        return sorted({*self.handlers, "date", *self.deferred})


def expand(template: str, context: MacroContext) -> str:
    """``template`` with every macro expanded. Raises :class:`MacroError`."""
    return expand_tracked(template, context).text


def has_macros(text: str) -> bool:
    """True if ``text`` contains a macro or an escape (so expansion may change it)."""
    return "${" in text


def expand_tracked(template: str, context: MacroContext) -> Expansion:
    """Like :func:`expand`, also telling whether secrets were used and which assets supplied values.

    Raises :class:`MacroError` with a one-line message naming the macro.
    """
    nodes, end = _parse(template, 0, top=True)
    state = _State()
    text = _eval(nodes, context, state)
    text = text.replace(_ESC, "$${" if state.deferred else "${")
    return Expansion(text, state.sensitive, tuple(dict.fromkeys(state.sources)),
                     state.pending, state.deferred)


# -- parsing ---------------------------------------------------------------------------

@dataclass
class _Macro:
    name: list
    default: list | None
    raw: str


def _parse(s: str, i: int, *, top: bool, in_name: bool = False) -> tuple[list, int]:
    """Parse text and macros from ``s[i:]`` until the end (top) or an unnested ``}`` / ``:-``."""
    nodes: list = []
    buf: list[str] = []
    while i < len(s):
        if s.startswith("$${", i):
            buf.append(_ESC)
            i += 3
        elif s.startswith("${", i):
            if buf:
                nodes.append("".join(buf))
                buf = []
            macro, i = _parse_macro(s, i)
            nodes.append(macro)
        elif not top and s[i] == "}":
            break
        elif in_name and s.startswith(":-", i):
            break
        else:
            buf.append(s[i])
            i += 1
    if buf:
        nodes.append("".join(buf))
    return nodes, i


def _parse_macro(s: str, start: int) -> tuple[_Macro, int]:
    name, i = _parse(s, start + 2, top=False, in_name=True)
    default = None
    if s.startswith(":-", i):
        default, i = _parse(s, i + 2, top=False)
    if i >= len(s) or s[i] != "}":
        shown = s[start:start + 40].replace(_ESC, "$${")
        raise MacroError(f"unterminated macro '{shown}' "
                         "(missing '}'; write $${ for a literal ${)")
    return _Macro(name, default, s[start:i + 1]), i + 1


# -- evaluation --------------------------------------------------------------------------

@dataclass
class _State:
    sensitive: bool = False
    pending: bool = False
    deferred: bool = False
    sources: list = field(default_factory=list)


def _eval(nodes: list, ctx: MacroContext, state: _State) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        else:
            out.append(_eval_macro(node, ctx, state))
    return "".join(out)


def _eval_macro(macro: _Macro, ctx: MacroContext, state: _State) -> str:
    name = _eval(macro.name, ctx, state).strip()
    if not name:
        raise MacroError(f"empty macro name in '{macro.raw}'")
    prefix, sep, key = name.partition(":")
    if sep and prefix in ctx.deferred:
        state.deferred = True
        return macro.raw
    found = _lookup(prefix if sep else None, key if sep else name, ctx, macro)
    if found is None or found.value == "":
        if macro.default is not None:
            return _eval(macro.default, ctx, state)
        if found is None:
            raise MacroError(_undefined(prefix if sep else None, name, ctx))
    state.sensitive |= found.sensitive
    state.pending |= found.pending
    if found.source:
        state.sources.append(found.source)
    return found.value.replace("${", _ESC)


def _as_resolved(value: str | Resolved | None) -> Resolved | None:
    if value is None or isinstance(value, Resolved):
        return value
    return Resolved(str(value))


def _lookup(prefix: str | None, key: str, ctx: MacroContext, macro: _Macro) -> Resolved | None:
    if prefix is None:
        found = None
        for layer in ctx.bare:  # lowest precedence first: a later layer wins
            handler = ctx.handlers.get(layer)
            hit = _as_resolved(handler(key)) if handler else None
            if hit is not None:
                found = hit
        return found
    if prefix == "date" and "date" not in ctx.handlers:
        try:
            return Resolved(format_date(key, ctx.now()))
        except DatePatternError as exc:
            raise MacroError(str(exc)) from None
    handler = ctx.handlers.get(prefix)
    # the macro as written, default and all: the user looks for that text in the YAML
    written = macro.raw.replace(_ESC, "$${")
    if handler is None:
        known = ctx.prefixes()
        match = difflib.get_close_matches(prefix, known, n=1, cutoff=0.5)
        hint = f"did you mean '{match[0]}'? " if match else ""
        raise MacroError(f"unknown macro prefix '{prefix}' in '{written}' "
                         f"({hint}known: {', '.join(known)})")
    if not key:
        raise MacroError(f"'{written}' names no variable after '{prefix}:'")
    return _as_resolved(handler(key))


def _known_names(prefix: str | None, ctx: MacroContext) -> list[str]:
    """The names ``prefix`` (None: a bare macro's layers) could have meant."""
    out: list[str] = []
    for p in ctx.bare if prefix is None else (prefix,):
        lister = ctx.names.get(p)
        if lister is not None:
            out += [str(n) for n in lister()]
    return list(dict.fromkeys(out))


def _undefined(prefix: str | None, name: str, ctx: MacroContext) -> str:
    if prefix == "env":
        where = f"environment variable {name[4:]} is not set"
    elif prefix == "lay":
        where = "no Environment asset defines it"
    elif prefix == "sec":
        where = "no Secret asset has that key"
    elif prefix is None:
        where = "not set in the environment, an Environment asset or a Secret"
    else:
        where = f"'{prefix}' has no value '{name.partition(':')[2]}'"
    key = name.partition(":")[2] if prefix is not None else name
    match = difflib.get_close_matches(key, _known_names(prefix, ctx), n=1, cutoff=0.6)
    if match:
        meant = f"{prefix}:{match[0]}" if prefix is not None else match[0]
        return f"undefined macro ${{{name}}}: {where} (did you mean ${{{meant}}}?)"
    return f"undefined macro ${{{name}}}: {where} (give a default with ${{{name}:-value}})"
