"""Sealed-box secrets: key pairs, sealing, opening, and reading Secret values.

The project holds a public key in ``<project>/postline.pub`` (safe to commit: it can only
seal). The private key lives in a file readable only by its owner, found in this order:
the ``key_file`` argument (CLI ``--key-file``), ``POSTLINE_KEY_FILE``, then
``$XDG_CONFIG_HOME/postline/keys/<key-id>.key`` (``~/.config/...``), where the key id is
derived from the public key so each project finds its own private key.

Sealed boxes (libsodium ``crypto_box_seal``, as GitHub uses for Actions secrets) need only
the public key to seal, and the private key to open. Values are stored as
``sealed:<base64>``; ``env:NAME`` and ``file:/path`` values are read at run time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from postline.errors import SecretError

PUBLIC_KEY_FILE = "postline.pub"
SEALED = "sealed:"
KEY_HINT = "run 'postline keys create' or set POSTLINE_KEY_FILE"
log = logging.getLogger(__name__)


def key_id(public: bytes) -> str:
    """A short, stable id of a public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(public).hexdigest()[:16]


def default_key_file(kid: str, environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/postline/keys/<kid>.key`` (``~/.config`` when unset)."""
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or str(Path.home()), ".config")
    return Path(config) / "postline" / "keys" / f"{kid}.key"


def choose_key_file(kid: str | None, *, key_file: str | Path | None,
                    environ: Mapping[str, str]) -> Path | None:
    """Where the private key is (or goes): argument, then POSTLINE_KEY_FILE, then the default."""
    if key_file:
        return Path(key_file).expanduser()
    if environ.get("POSTLINE_KEY_FILE"):
        return Path(environ["POSTLINE_KEY_FILE"]).expanduser()
    return default_key_file(kid, environ) if kid else None


def _read_key_text(text: str, what: str) -> bytes:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        raw = base64.b64decode(lines[0], validate=True) if lines else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SecretError(f"{what} is not a postline key (expected one base64 line of 32 bytes)")
    return raw


def read_public_key(root: Path) -> bytes | None:
    """The project's public key, or None if it has none. Raises SecretError if malformed."""
    path = root / PUBLIC_KEY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror}") from exc
    return _read_key_text(text, str(path))


@dataclass(frozen=True)
class CreatedKeys:
    key_id: str
    public_file: Path
    private_file: Path


def create_key_pair(root: Path, *, key_file: str | Path | None,
                    environ: Mapping[str, str], force: bool = False) -> CreatedKeys:
    """Make a key pair: private key to a 0600 file, public key to ``<root>/postline.pub``.

    Refuses to replace either file unless ``force``. Raises :class:`SecretError`.
    """
    if not root.is_dir():
        raise SecretError(f"project directory {root} does not exist")
    private = PrivateKey.generate()
    public = bytes(private.public_key)
    kid = key_id(public)
    target = choose_key_file(kid, key_file=key_file, environ=environ)
    assert target is not None
    pub_file = root / PUBLIC_KEY_FILE
    if not force:
        for existing in (pub_file, target):
            if existing.exists():
                raise SecretError(
                    f"{existing} already exists; refusing to replace it (pass --force; secrets "
                    "sealed to the old key can then no longer be read)")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(target, bytes(private), kid)
    pub_file.write_text(
        "# postline project public key (X25519, base64). Safe to commit: it can only seal\n"
        f"# secrets. The private key (key id {kid}) stays on the host that runs postline.\n"
        f"{base64.b64encode(public).decode()}\n")
    return CreatedKeys(kid, pub_file, target)


def _write_private(path: Path, raw: bytes, kid: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (f"# postline private key, key id {kid}. Keep it secret; never commit it.\n"
                      f"{base64.b64encode(raw).decode()}\n").encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_private_key(path: Path, public: bytes) -> PrivateKey:
    """The private key in ``path``, checked against the project's ``public`` key.

    Raises :class:`SecretError` (without the "cannot decrypt" prefix; callers add the name).
    """
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretError(f"no private key at {path}") from None
    except OSError as exc:
        raise SecretError(f"cannot read private key {path}: {exc.strerror}") from exc
    if mode & 0o077:
        log.warning("private key %s is readable by others (mode %o); chmod 600 it",
                    path, mode & 0o777)
    key = PrivateKey(_read_key_text(text, f"private key file {path}"))
    if bytes(key.public_key) != public:
        raise SecretError(f"the private key in {path} (key id {key_id(bytes(key.public_key))}) "
                          f"does not belong to this project (key id {key_id(public)})")
    return key


def seal(public: bytes, data: bytes | str) -> str:
    """``sealed:<base64>`` of ``data`` sealed to ``public`` (no private key needed)."""
    if isinstance(data, str):
        data = data.encode()
    return SEALED + base64.b64encode(SealedBox(PublicKey(public)).encrypt(data)).decode()


def open_sealed(private: PrivateKey, text: str) -> bytes:
    """Plaintext of ``sealed:<base64>`` (prefix optional). Raises SecretError if it won't open."""
    body = text[len(SEALED):] if text.startswith(SEALED) else text
    try:
        box = base64.b64decode(body.strip(), validate=True)
        return SealedBox(private).decrypt(box)
    except (binascii.Error, ValueError):
        raise SecretError("the sealed value is not valid base64") from None
    except CryptoError:
        raise SecretError("the value was sealed to a different key or is damaged; set it "
                          "again with 'postline secret set'") from None
