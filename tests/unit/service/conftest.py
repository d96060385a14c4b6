"""Fixtures for the Email Service unit tests."""

from __future__ import annotations

import pytest
from service_fakes import FakeSender, make_project


@pytest.fixture
def fake_sender():
    return FakeSender()


@pytest.fixture
def service_factory(tmp_path):
    from postline.service import open_service

    opened = []

    def factory(sender=None, *, poll_interval=0.05, **fields):
        sender = sender or FakeSender()
        project = make_project(tmp_path, **fields)
        svc = open_service(project, fields.get("name", "Notify"), sender_factory=lambda: sender,
                           poll_interval=poll_interval)
        opened.append(svc)
        return svc, sender

    yield factory
    for svc in opened:
        svc.close()

