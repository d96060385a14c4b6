"""Fixtures of the Email Service integration tests (the stack comes from tests/conftest.py)."""

from __future__ import annotations

import pytest

from postline.service import close_all
from postline.testing.info import MailUser


@pytest.fixture(autouse=True)
def _close_services():
    yield
    close_all()


@pytest.fixture
def sender_user() -> MailUser:
    """The mailbox that submits (authenticates to Postfix)."""
    return MailUser.fresh("sender")


@pytest.fixture
def second_user() -> MailUser:
    return MailUser.fresh("cc")
