"""A loaded, validated project: its assets, secrets and state directory.

``open_project(path)`` is the one place that reads the OS environment (for ``${env:...}``
macros, ``env:`` secrets, ``POSTLINE_STATE_DIR`` and ``POSTLINE_KEY_FILE``); everything
below is handed what it needs. The heavy lifting lives in :mod:`postline.assets`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

from postline.assets.kinds.base import AssetModel, SecretRef
from postline.assets.kinds.secret import value_source
from postline.assets.loader import Entry, Loaded, build, load
from postline.assets.macros import MacroContext
from postline.assets.problems import Problem
from postline.assets.references import Reference, usage
from postline.assets.validation import suggest
from postline.errors import ConfigError, SecretError, ValidationFailed

STATE_DIR_NAME = ".postline-state"


class Project:
    """The assets of one project directory. Build it with :func:`open_project`."""

    def __init__(self, *, loaded: Loaded, state_dir: Path, reloader=None) -> None:
        self._loaded = loaded
        self._reloader = reloader
        self._resolved: dict[tuple[str, str], AssetModel] = {}
        self.root: Path = loaded.root
        self.state_dir: Path = state_dir

    @property
    def problems(self) -> list[Problem]:
        """Every error, warning and note found, in file order."""
        return sorted(self._loaded.problems, key=lambda p: (p.file, p.line))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Warnings (``.field``, ``.message`` like ConfigWarning, plus file, line, asset)."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def notes(self) -> list[Problem]:
        """Notes: files skipped because they hold no assets (other YAML in the directory)."""
        return [p for p in self.problems if p.severity == "note"]

    @property
    def references(self) -> list[Reference]:
        return list(self._loaded.references)

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every asset entry (valid or not) of ``kind`` (all kinds if None), in project order."""
        return [e for e in self._loaded.entries if kind is None or e.kind == kind]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of ``kind/name``. Raises ConfigError (with a did-you-mean) if none."""
        for e in self._loaded.entries:
            if e.kind == kind and e.name == name:
                return e
        names = [e.name for e in self.entries(kind)]
        raise ConfigError(f"no {kind} named '{name}' in {self.root}{suggest(name, names)}",
                          hint=f"known: {', '.join(names)}" if names else None)

    def find(self, name: str, kind: str | None = None) -> Entry:
        """The one entry called ``name`` (of ``kind`` if given). Raises ConfigError if 0 or many."""
        if kind:
            return self.entry(kind, name)
        hits = [e for e in self._loaded.entries if e.name == name]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise ConfigError(f"'{name}' names several assets ({', '.join(e.label for e in hits)})",
                              hint="pass --kind")
        names = [e.name for e in self._loaded.entries]
        raise ConfigError(f"no asset named '{name}' in {self.root}{suggest(name, names)}")

    def get(self, kind: str, name: str) -> AssetModel:
        """The validated model of ``kind/name``, macros expanded (secrets read if used).

        Raises ConfigError if there is no such asset or it is invalid, SecretError if a
        secret it uses by macro cannot be read.
        """
        e = self.entry(kind, name)
        if e.model is None:
            raise ConfigError(f"{e.label} is invalid", hint="run 'postline validate'")
        if not e.pending:
            return e.model
        if (kind, name) not in self._resolved:
            strict = copy.copy(e)
            problems = build(strict, self.macro_context(), self.root, strict=True)
            if strict.model is None:
                raise ValidationFailed(problems)
            self._resolved[(kind, name)] = strict.model
        return self._resolved[(kind, name)]

    def assets(self, kind: str | None = None) -> list[AssetModel]:
        """Models of every valid asset of ``kind`` (all if None), in project order."""
        return [e.model for e in self.entries(kind) if e.model is not None]

    def secret(self, ref: SecretRef | str) -> str:
        """The value of a Secret key (``Asset.key``), decrypted or read now. Raises SecretError."""
        asset, dot, key = str(ref).rpartition(".")
        if not dot:
            raise SecretError(f"'{ref}' does not name a secret as SecretAsset.key")
        return self._loaded.secrets.read(asset, key)

    def seal(self, value: bytes | str) -> str:
        """``sealed:<base64>``: ``value`` sealed to the project's public key. Raises SecretError."""
        return self._loaded.secrets.seal(value)

    def open_sealed(self, text: str) -> bytes:
        """Plaintext of a :meth:`seal` result; needs the private key. Raises SecretError."""
        return self._loaded.secrets.open_sealed(text)

    def reload(self, *, overrides: Mapping[Path, str] | None = None) -> Project:
        """This project loaded again from disk the way it was first loaded (same directory as
        given, environment and key file), without failing on validation errors; with
        ``overrides`` (absolute path -> text) read instead of those files. Raises
        ConfigError when the directory is no longer a project."""
        if self._reloader is None:
            return load_project(self.root, environ=self._loaded.environ,
                                key_file=self._loaded.secrets.key_file, overrides=overrides)
        return self._reloader(overrides)

    def usage(self, name: str, kind: str | None = None) -> list[Reference]:
        """Who references ``name`` (of ``kind``). Raises ConfigError if the asset is unknown."""
        e = self.find(name, kind)
        return usage(self._loaded.references, e.kind, e.name)

    def service(self, name: str):
        """The running Email Service ``name`` (``Send``, ``SendAndForget``, ``send``, ...).

        One instance per project and name in a process. Raises ConfigError when there is no
        such EmailService or its connection cannot send.
        """
        from postline.service import open_service

        return open_service(self, name)

    def macro_context(self) -> MacroContext:
        """The project's macro context (env, lay, sec, date) for run-time expansion.

        Add prefixes with ``.with_prefix("mail", {...})``; reading a secret may raise SecretError.
        """
        return self._loaded.context(strict=True)


def load_project(path: str | os.PathLike = ".", *, environ: Mapping[str, str] | None = None,
                 key_file: str | os.PathLike | None = None,
                 overrides: Mapping[Path, str] | None = None) -> Project:
    """Load the project at ``path`` without failing on validation errors (see ``.problems``).

    ``overrides`` (absolute path -> text) are read instead of those files, to check an edit
    before it is written. Raises ConfigError only when ``path`` is not a project directory.
    """
    environ = os.environ if environ is None else environ
    shown = os.fspath(path)
    root = Path(shown).expanduser().resolve()
    state = environ.get("POSTLINE_STATE_DIR")
    state_dir = Path(state).expanduser().resolve() if state else root / STATE_DIR_NAME
    loaded = load(root, shown_root=shown, environ=environ, key_file=key_file,
                  state_dir=state_dir, overrides=overrides)

    def reloader(new_overrides: Mapping[Path, str] | None) -> Project:
        return load_project(path, environ=environ, key_file=key_file, overrides=new_overrides)

    return Project(loaded=loaded, state_dir=state_dir, reloader=reloader)


def open_project(path: str | os.PathLike = ".", *, environ: Mapping[str, str] | None = None,
                 key_file: str | os.PathLike | None = None) -> Project:
    """Load and validate the project at ``path``.

    ``environ`` defaults to ``os.environ``; ``key_file`` overrides ``POSTLINE_KEY_FILE``.
    Raises :class:`ValidationFailed` carrying every problem (errors and warnings) when
    there is any error, ConfigError when ``path`` is not a project.
    """
    project = load_project(path, environ=environ, key_file=key_file)
    if project.errors:
        raise ValidationFailed(project.problems)
    return project


def stored_as(project: Project):
    """(asset, key) -> ``sealed`` / ``env:NAME`` / ``file:/path`` / None: where a secret lives.

    Returns the lookup function (``postline show`` and the console's asset page use it)."""
    def lookup(asset: str, key: str) -> str | None:
        for e in project.entries("Secret"):
            values = e.doc.data.get("values")
            if e.name == asset and isinstance(values, dict) and isinstance(values.get(key), str):
                stored = values[key]
                return "sealed" if value_source(stored) == "sealed" else stored
        return None
    return lookup


def source_of(project: Project, name: str):
    """Returns (EmailSource model, its EmailConnection, protocol: imap | pop3 | graph) of
    source ``name``. Raises ConfigError when there is no such source or connection."""
    source = project.get("EmailSource", name)
    conn = project.get("EmailConnection", source.connection)
    protocol = ("graph" if conn.type == "microsoft365" else
                conn.incoming.protocol if conn.incoming is not None else "")
    return source, conn, protocol
