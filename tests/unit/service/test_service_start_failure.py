"""An Email Service that cannot start leaves no thread, database or lock behind."""

from __future__ import annotations

import threading

import pytest
from service_fakes import FakeSender

from postline.errors import StorageError
from postline.limiter import SlidingWindow
from postline.service.email_service import EmailService
from postline.service.engine import EngineSettings
from postline.state.locks import ProcessLock
from postline.state.outbox import Outbox


class _FullDiskOutbox(Outbox):
    def recover(self, service: str) -> int:
        raise StorageError("cannot write the outbox: no space left on device")


def test_a_failed_start_raises_and_releases_everything(tmp_path):
    outbox = _FullDiskOutbox(tmp_path / "outbox.sqlite")
    lock = ProcessLock(tmp_path / "outbox-Notify.lock")
    with pytest.raises(StorageError, match="no space left"):
        EmailService(settings=EngineSettings(service="Notify"), open_sender=FakeSender,
                     outbox=outbox, lock=lock, throttle=SlidingWindow(limit=None, window=1))
    assert not any(t.name == "postline-service-Notify" for t in threading.enumerate())
    other = ProcessLock(tmp_path / "outbox-Notify.lock")
    assert other.try_acquire()          # the next process can deliver the outbox
    other.release()
    with pytest.raises(Exception, match="closed"):
        outbox.counts("Notify")         # the database connection was closed
