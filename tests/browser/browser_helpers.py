"""Helpers of the console's browser tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
POSTLINE = str(Path(sys.executable).parent / "postline")   # the installed console script
TOKEN = "browser-test-token-0123456789"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def artifacts_dir() -> Path:
    where = Path(os.environ.get("POSTLINE_ARTIFACTS") or REPO / "tests" / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


def shot(page, name: str) -> Path:
    """Save a full-page screenshot ``<artifacts>/<name>.png``; returns its path."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keyed_copy(source: Path, dest: Path, key_file: Path) -> Path:
    """A copy of project ``source`` at ``dest`` with a key pair of its own (the private key
    in ``key_file``): the console can seal Secret values and token caches there."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".postline-state"))
    subprocess.run([POSTLINE, "keys", "create", str(dest), "--key-file", str(key_file)],
                   check=True, capture_output=True, timeout=60)
    return dest
