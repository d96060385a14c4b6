"""The device-flow token cache: MSAL's serialized cache, sealed with the project's key.

One file per connection and direction: ``<state_dir>/tokens/<connection>-<direction>.bin``,
mode 0600 in a 0700 directory, written atomically. Its content is ``project.seal(...)`` of
MSAL's JSON, so a copied file is useless without the project's private key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from postline.errors import TokenError
from postline.files import make_dirs
from postline.state.paths import token_cache_path

# the path of a cache, under its old name
cache_path = token_cache_path


def load(source: Any, path: Path) -> str | None:
    """The MSAL cache JSON stored at ``path``, or None when there is none.

    Raises TokenError when the file exists but cannot be opened with the project's key.
    """
    from postline.state.pg_tokens import shared_tokens

    shared = shared_tokens(source)   # a postgresql StateStore: the fleet's one login
    if shared is not None:
        return shared.load(path.name)
    try:
        sealed = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TokenError(f"cannot read the token cache {path}: {exc.strerror}") from exc
    try:
        return source.open_sealed(sealed.strip()).decode("utf-8")
    except Exception as exc:  # noqa: BLE001 - any failure means: this key cannot open it
        raise TokenError(f"the token cache {path} cannot be decrypted with this project's key",
                         hint="run 'postline login' again to create a new one") from exc


def save(source: Any, path: Path, cache_json: str) -> None:
    """Seal ``cache_json`` and write it to ``path`` (0600, atomic replace)."""
    from postline.state.pg_tokens import shared_tokens

    shared = shared_tokens(source)   # a postgresql StateStore: sealed in its database
    if shared is not None:
        shared.save(path.name, cache_json)
        return
    make_dirs(path.parent)
    os.chmod(path.parent, 0o700)
    sealed = source.seal(cache_json.encode("utf-8"))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(sealed)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
