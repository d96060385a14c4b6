"""MailboxReader as a context manager: a failed connect still closes what it opened."""

from __future__ import annotations

import pytest

from postline.errors import AuthError
from postline.protocols.base import MailboxReader


class _FailingLogin(MailboxReader):
    def __init__(self) -> None:
        self.closed = 0

    def connect(self) -> None:
        raise AuthError("IMAP login as a@example.test failed: wrong password")

    def close(self) -> None:
        self.closed += 1


# the other abstract methods are never reached here
_FailingLogin.__abstractmethods__ = frozenset()


def test_a_failed_login_closes_the_connection():
    reader = _FailingLogin()
    with pytest.raises(AuthError, match="wrong password"):
        with reader:
            pass
    assert reader.closed == 1
