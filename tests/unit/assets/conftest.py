"""Helpers for the asset tests: write a project from a dict of file texts and load it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from postline.project import load_project


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


@pytest.fixture
def project_dir(tmp_path):
    """``project_dir(files) -> Path`` of a fresh project under tmp_path."""
    counter = iter(range(1000))

    def make(files: dict[str, str]) -> Path:
        return write_project(tmp_path / f"p{next(counter)}", files)
    return make


@pytest.fixture
def load(project_dir):
    """``load(files, environ={}) -> Project`` (never raises on validation errors)."""
    def run(files: dict[str, str], environ: dict | None = None, **kw):
        root = project_dir(files)
        return load_project(root, environ=environ if environ is not None else {
            "HOME": str(root), "MAIL_PASSWORD": "pw-from-env"},
                            **kw)
    return run
