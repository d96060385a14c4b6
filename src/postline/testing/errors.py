"""Errors of the local mail stack (see :mod:`postline.errors` for the tree they hang from)."""

from __future__ import annotations

from postline.errors import PostlineError


class StackError(PostlineError):
    """The local mail stack could not be installed, started or stopped; names the component."""


class StackUnavailable(StackError):
    """A component of the stack is not installed or cannot run on this machine.

    The pytest fixtures skip integration tests on this error (and fail on it in CI).
    """
