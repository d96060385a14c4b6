from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wf_support import FakeMailbox, write_project  # noqa: E402

import postline  # noqa: E402


@pytest.fixture
def box() -> FakeMailbox:
    return FakeMailbox()


@pytest.fixture
def project_at(tmp_path):
    def make(**kw):
        return postline.open_project(write_project(tmp_path / "proj", **kw))
    return make
