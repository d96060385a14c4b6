"""Spool files for large messages, shared by the IMAP and POP3 readers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from postline.files import make_dirs


def open_spool(spool_dir: Path, stem: str) -> tuple[BinaryIO, Path]:
    """A new private file (mode 0600) in ``spool_dir`` for one message, and its path."""
    make_dirs(spool_dir)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60]
    fd, name = tempfile.mkstemp(prefix=f"{safe}-", suffix=".eml", dir=spool_dir)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb"), Path(name)
