"""Waiting for a condition in tests, instead of sleeping: the one polling loop of the test
suite (and of users' tests; this module ships with postline).

``eventually(cond, timeout, what)`` polls until ``cond()`` returns something truthy and
returns it, or fails naming what it waited for; ``wait_for_mail(...)`` waits until a mail
with a subject is in a folder of the local stack and returns its bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def poll(cond: Callable[[], T], *, timeout: float, interval: float = 0.02) -> T | None:
    """Call ``cond()`` until it returns something truthy (returned) or ``timeout`` seconds
    passed; then it is asked once more, and its last result returned (falsy: timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            return cond()
        time.sleep(interval)


def eventually(cond: Callable[[], T], timeout: float = 10.0, what: str = "condition", *,
               interval: float = 0.02) -> T:
    """What ``cond()`` returned once it was truthy. Raises AssertionError ("timed out
    after 10 s waiting for <what>") when it is not within ``timeout`` seconds."""
    value = poll(cond, timeout=timeout, interval=interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return value


def wait_for_mail(stack: Any, user: Any, subject: str, *, folder: str = "INBOX",
                  timeout: float = 20.0, imaps: bool = False) -> bytes:
    """The raw bytes of the first mail whose subject contains ``subject`` in ``folder`` of
    ``user`` (a stack user: ``email``, ``password``) once it arrived; over the stack's
    plain IMAP port, or with ``imaps`` its IMAPS port. Raises AssertionError naming the
    subject and folder when none arrives within ``timeout`` seconds."""
    from imapclient import IMAPClient  # only the tests that read mail back need it

    if imaps:
        client = IMAPClient(stack.host, port=stack.ports["imaps"],
                            ssl_context=stack.ssl_context(), timeout=10)
    else:
        client = IMAPClient(stack.host, port=stack.ports["imap"], ssl=False, timeout=10)
    client.login(user.email, user.password)
    try:
        def found() -> bytes | None:
            client.select_folder(folder, readonly=True)
            uids = client.search(["SUBJECT", subject])
            if not uids:
                return None
            return client.fetch(uids[:1], ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]

        return eventually(found, timeout, f"mail {subject!r} in {folder}", interval=0.05)
    finally:
        client.logout()
