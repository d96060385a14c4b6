"""Session fixtures shared by every test: the local mail stack (see docs/dev-stack.md).

- ``mail_stack`` (session): a running stack on random free ports in a temp dir -> StackInfo.
  Skips its tests only when a server truly cannot run here (a package not installed, not
  root); with ``CI=true`` that is a failure instead, so CI never goes green by skipping.
- ``mailbox_user`` (function): a fresh ``MailUser(email, password)`` nobody used before.
- ``pg_server`` (session): a private PostgreSQL on a random port in a temp dir -> PostgresInfo
  (``.url`` of the role ``postline`` owning the database ``postline``, ``.admin_url`` of the
  superuser). Started only when a test of the session asks for it, stopped at the end.
- ``pg_url`` (session): ``pg_server.url``, the URL a StateStore (or POSTLINE_STATE_URL) takes.

Tests that use ``mail_stack`` get the ``stack`` marker, those that use PostgreSQL the
``postgres`` marker, so ``pytest -m "not stack and not postgres"`` runs only what needs no
servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postline.testing.info import MailUser, StackInfo
from postline.testing.postgres import PostgresInfo


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    # `eval "$(postline dev-stack env)"` exports the dev stack's StateStore URL; it would turn
    # every test project's SQLite state into that database (and add a warning to projects
    # without a StateStore). Tests set it themselves where they mean to.
    os.environ.pop("POSTLINE_STATE_URL", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mail_stack" in getattr(item, "fixturenames", ()) or \
                "mailbox_user" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)
        if {"pg_server", "pg_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


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
    # PostgreSQL is the pg_url fixture's, started only for the tests that ask for it
    stack = Stack(dir=stack_dir, cache_dir=cache, postgres=False)
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


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresInfo]:
    """A private PostgreSQL for the session (only if some test asks); stopped at the end."""
    from postline.testing.errors import StackUnavailable
    from postline.testing.ports import free_port
    from postline.testing.postgres import DevPostgres

    # mode 0755: as root the server runs as the 'postgres' user, which must reach its directory
    parent = Path(tempfile.mkdtemp(prefix="postline-pg-"))
    os.chmod(parent, 0o755)
    server = DevPostgres(dir=parent / "postgres", port=free_port())
    try:
        info = server.start()
    except StackUnavailable as exc:
        shutil.rmtree(parent, ignore_errors=True)
        if _in_ci():
            pytest.fail(f"PostgreSQL cannot run in CI: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL cannot run here: {exc}")
    except BaseException:
        server.stop()
        raise
    try:
        yield info
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\nPostgreSQL kept for inspection: {server.log_file}")
        else:
            shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresInfo) -> str:
    """The application role's URL of the session's PostgreSQL (see ``pg_server``)."""
    return pg_server.url
