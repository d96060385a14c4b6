"""A stand-in for :class:`postline.project.Project` for testing adapters without YAML.

It offers what the protocol adapters and OAuth providers use from a project: secrets,
sealing (with a random in-memory key), a state directory and EmailConnection models::

    project = StubProject(tmp_path, secrets={"Mail.password": "s3cret"})
    conn = project.add({"name": "Box", "incoming": {...}})
    with open_reader(project, conn) as reader: ...
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from postline.errors import SecretError


class StubProject:
    """Secrets from a dict, a throwaway sealing key, connections added as dicts."""

    def __init__(self, root: Path, secrets: dict[str, str] | None = None) -> None:
        import nacl.secret
        import nacl.utils

        self.root = root
        self.state_dir = root / ".postline-state"
        self.secrets = dict(secrets or {})
        self.connections: dict[str, Any] = {}
        self._box = nacl.secret.SecretBox(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))

    def secret(self, ref) -> str:
        """The value of ``ref`` (``Asset.key``). Raises SecretError when not set."""
        try:
            return self.secrets[str(ref)]
        except KeyError:
            raise SecretError(f"secret {ref} is not set") from None

    def seal(self, value: bytes) -> str:
        return base64.b64encode(self._box.encrypt(value)).decode()

    def open_sealed(self, text: str) -> bytes:
        return self._box.decrypt(base64.b64decode(text))

    def get(self, kind: str, name: str) -> Any:
        if kind != "EmailConnection":
            raise KeyError(f"the stub project holds EmailConnection entries only, not {kind}")
        return self.connections[name]

    def add(self, data: dict) -> Any:
        """Validate ``data`` (an EmailConnection without ``kind``) and keep it by name."""
        from postline.assets.kinds.connection import EmailConnection

        conn = EmailConnection.model_validate({"kind": "EmailConnection", **data})
        self.connections[conn.name] = conn
        return conn
