"""Fixtures of the connection tests (helpers live in connhelpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from connhelpers import LocalCA, StubProject

from postline.auth import oauth


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("local-ca"))


@pytest.fixture
def project(tmp_path) -> StubProject:
    return StubProject(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_token_providers():
    """Tokens are cached per process; each test starts without any."""
    oauth.forget_providers()
    yield
    oauth.forget_providers()


if not (Path(__file__).resolve().parents[2] / "conftest.py").exists():
    # The stack fixtures come from tests/conftest.py (the stack engineer's). Without it,
    # use a stack already running in $POSTLINE_TEST_STACK_DIR, else skip those tests.
    @pytest.fixture(scope="session")
    def mail_stack():
        import os

        from postline.testing.info import StackInfo

        where = os.environ.get("POSTLINE_TEST_STACK_DIR")
        info = StackInfo.load(Path(where)) if where else None
        if info is None:
            pytest.skip("no mail stack: tests/conftest.py is missing and "
                        "POSTLINE_TEST_STACK_DIR is not set")
        return info

    @pytest.fixture
    def mailbox_user(mail_stack):
        from postline.testing.info import MailUser

        return MailUser.fresh("conn")
