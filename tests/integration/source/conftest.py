"""Fixtures of the Email Source integration tests (the helpers live in srchelpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from srchelpers import Mailbox, SourceProject


@pytest.fixture
def mailbox(mail_stack, mailbox_user) -> Mailbox:
    return Mailbox(mail_stack, mailbox_user)


@pytest.fixture
def source_project(tmp_path, mail_stack, mailbox_user) -> SourceProject:
    return SourceProject(tmp_path / "proj", mail_stack, mailbox_user)
