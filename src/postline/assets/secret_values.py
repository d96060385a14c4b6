"""Reading the values of Secret assets on demand: ``sealed:``, ``env:NAME``, ``file:/path``.

Nothing is decrypted or read until asked for; every value read is registered with
:func:`postline.logs.register_secret` so log lines mask it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nacl.public import PrivateKey

from postline.assets import secrets as keys
from postline.errors import SecretError
from postline.logs import register_secret


class SecretValues:
    """The stored entries of every Secret asset and the means to read them.

    ``entries`` maps asset name -> key -> stored text (``sealed:...``, ``env:...``, ``file:...``).
    """

    def __init__(self, *, entries: Mapping[str, Mapping[str, str]], root: Path,
                 public: bytes | None, key_file: str | Path | None,
                 environ: Mapping[str, str]) -> None:
        self._entries = {a: dict(v) for a, v in entries.items()}
        self._root = root
        self._public = public
        self._environ = environ
        self._key_file = keys.choose_key_file(
            keys.key_id(public) if public else None, key_file=key_file, environ=environ)
        self._private: PrivateKey | None = None

    @property
    def public_key(self) -> bytes | None:
        return self._public

    @property
    def key_file(self) -> Path | None:
        return self._key_file

    def stored(self, asset: str, key: str) -> str | None:
        """The stored text of ``asset.key`` (never a plaintext secret), or None."""
        return self._entries.get(asset, {}).get(key)

    def asset_names(self) -> list[str]:
        """Names of the Secret assets, in project order."""
        return list(self._entries)

    def keys_of(self, asset: str) -> list[str]:
        """The key names of Secret asset ``asset`` (never values)."""
        return list(self._entries.get(asset, {}))

    def assets_with(self, key: str) -> list[str]:
        """Names of the Secret assets that have ``key``."""
        return [name for name, values in self._entries.items() if key in values]

    def readable(self, asset: str, key: str) -> bool:
        """Whether :meth:`read` would succeed now, without reading anything yet."""
        stored = self.stored(asset, key) or ""
        source, _, rest = stored.partition(":")
        if source == "env":
            return rest in self._environ
        if source == "file":
            return self._path(rest).is_file()
        if source == "sealed":
            return (self._public is not None and self._key_file is not None
                    and self._key_file.is_file())
        return False

    def read(self, asset: str, key: str) -> str:
        """The value of ``asset.key``. Raises :class:`SecretError` naming the secret."""
        name = f"{asset}.{key}"
        stored = self.stored(asset, key)
        if stored is None:
            raise SecretError(f"no secret {name}", hint=f"add it with 'postline secret set "
                              f"PROJECT {asset} {key}'")
        source, _, rest = stored.partition(":")
        if source == "env":
            if rest not in self._environ:
                raise SecretError(f"cannot read secret {name}: environment variable {rest} "
                                  "is not set")
            value = self._environ[rest]
        elif source == "file":
            value = self._read_file(name, self._path(rest))
        elif source == "sealed":
            try:
                value = self.open_sealed(stored).decode("utf-8")
            except UnicodeDecodeError:
                raise SecretError(f"cannot decrypt secret {name}: not UTF-8 text") from None
            except SecretError as exc:
                raise SecretError(f"cannot decrypt secret {name}: {exc.message}",
                                  hint=exc.hint) from None
        else:
            raise SecretError(f"secret {name} is not sealed:, env: or file:")
        register_secret(value)
        return value

    def seal(self, data: bytes | str) -> str:
        """``sealed:<base64>`` of ``data``. Raises SecretError when there is no public key."""
        if self._public is None:
            raise SecretError(f"the project has no public key ({keys.PUBLIC_KEY_FILE})",
                              hint=keys.KEY_HINT)
        return keys.seal(self._public, data)

    def open_sealed(self, text: str) -> bytes:
        """Plaintext of a ``sealed:`` value. Raises SecretError (missing/wrong key, damaged)."""
        return keys.open_sealed(self._private_key(), text)

    def _private_key(self) -> PrivateKey:
        if self._private is None:
            if self._public is None:
                raise SecretError(f"the project has no public key ({keys.PUBLIC_KEY_FILE})",
                                  hint=keys.KEY_HINT)
            assert self._key_file is not None
            try:
                self._private = keys.load_private_key(self._key_file, self._public)
            except SecretError as exc:
                hint = self._missing_key_hint() if not self._key_file.exists() else \
                    keys.KEY_HINT
                raise SecretError(exc.message, hint=hint) from None
        return self._private

    def _missing_key_hint(self) -> str:
        """Where the private key was looked for and how to point at one that exists: the
        key usually does exist (made on another host, or by the demo), so 'keys create'
        would be the wrong advice; it comes last, with its price."""
        assert self._public is not None
        kid = keys.key_id(self._public)
        lost = ("if the key is lost, 'postline keys create PROJECT --force' makes a new pair "
                "and every sealed value must be set again")
        if self._environ.get("POSTLINE_KEY_FILE"):
            return (f"POSTLINE_KEY_FILE points there; point it at the file holding the private "
                    f"key of key id {kid}; {lost}")
        return (f"the private key of key id {kid} is looked for there; if it is elsewhere, "
                f"export POSTLINE_KEY_FILE=/path/to/the.key; {lost}")

    def _path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self._root / path

    @staticmethod
    def _read_file(name: str, path: Path) -> str:
        try:
            value = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SecretError(f"cannot read secret {name} from {path}: {reason}") from None
        # Mounted secrets often end with one newline that is not part of the value.
        if value.endswith("\r\n"):
            return value[:-2]
        return value[:-1] if value.endswith("\n") else value
