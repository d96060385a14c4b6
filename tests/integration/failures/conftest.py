"""Fixtures of the end-to-end failure tests (helpers live in failhelpers.py)."""

from __future__ import annotations

import pytest
from failhelpers import StackProject


@pytest.fixture
def stack_project(tmp_path, mail_stack, mailbox_user):
    """A factory: ``stack_project(**overrides) -> StackProject`` in a fresh directory."""
    count = iter(range(100))

    def make(**kw) -> StackProject:
        return StackProject(tmp_path / f"p{next(count)}", mail_stack, mailbox_user, **kw)

    return make
