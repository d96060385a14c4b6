"""Session fixtures shared by every test: the local mail stack (see docs/dev-stack.md).

- ``mail_stack`` (session): a running stack on random free ports in a temp dir -> StackInfo.
  Skips its tests only when a server truly cannot run here (a package not installed, not
  root); with ``CI=true`` that is a failure instead, so CI never goes green by skipping.
- ``mailbox_user`` (function): a fresh ``MailUser(email, password)`` nobody used before.

Tests that use ``mail_stack`` get the ``stack`` marker, so ``pytest -m "not stack"`` runs
only what needs no servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postline.testing.info import MailUser, StackInfo


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mail_stack" in getattr(item, "fixturenames", ()) or \
                "mailbox_user" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def mail_stack(request: pytest.FixtureRequest) -> Iterator[StackInfo]:
    """A running local mail stack for the whole session; stopped at the end, even on failure."""
    from postline.testing.errors import StackUnavailable
    from postline.testing.install import default_cache_dir, install_oidc_deps, missing_packages
    from postline.testing.stack import Stack

    cache = default_cache_dir(os.environ)
    # Not pytest's tmp_path: its parents are mode 0700, and Dovecot reads mail as "nobody".
    stack_dir = Path(tempfile.mkdtemp(prefix="postline-stack-"))
    os.chmod(stack_dir, 0o755)
    stack = Stack(dir=stack_dir, cache_dir=cache)
    try:
        if not missing_packages():
            install_oidc_deps(cache, quiet=True)  # fast no-op when already installed
        info = stack.start()
    except StackUnavailable as exc:
        shutil.rmtree(stack_dir, ignore_errors=True)
        if _in_ci():
            pytest.fail(f"local mail stack cannot run in CI: {exc}", pytrace=False)
        pytest.skip(f"local mail stack cannot run here: {exc}")
    except BaseException:
        stack.stop()
        raise
    try:
        yield info
    finally:
        stack.stop()
        if request.session.testsfailed:
            # keep configs and logs for a post-mortem
            print(f"\nlocal mail stack kept for inspection: {stack_dir}/logs/")
        else:
            shutil.rmtree(stack_dir, ignore_errors=True)


@pytest.fixture
def mailbox_user(mail_stack: StackInfo) -> MailUser:
    """A user of the stack that no other test used (unique local part), with its password."""
    return MailUser.fresh()
