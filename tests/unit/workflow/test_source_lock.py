"""One reader per source: the source lock (an flock the kernel frees when the holder dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from postline.errors import Busy
from postline.state.locks import Holder, ProcessLock, parse_holder
from postline.testing.waits import eventually
from postline.workflow.engine import lock_sources, source_lock


def _project(tmp_path):
    return SimpleNamespace(state_dir=tmp_path / "state")


def _wf(name: str, source: str):
    return SimpleNamespace(name=name, source=source)


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path):
    first = ProcessLock(tmp_path / "x.lock")
    assert first.try_acquire() and first.try_acquire()   # re-entrant for its holder
    second = ProcessLock(tmp_path / "x.lock")
    assert not second.try_acquire()
    holder = second.holder()
    assert holder.pid == os.getpid() and holder.host and holder.since
    assert f"pid {os.getpid()} on host " in holder.describe() and "UTC" in holder.describe()
    first.release()
    assert second.try_acquire()
    second.release()


def test_the_lock_is_freed_when_its_holder_is_killed(tmp_path):
    path = tmp_path / "x.lock"
    code = ("import sys, time; from postline.state.locks import ProcessLock; "
            f"assert ProcessLock({str(path)!r}).try_acquire(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = ProcessLock(path)
        assert not lock.try_acquire()
        assert lock.holder().pid == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        eventually(lock.try_acquire, 5, "the lock to outlive its killed holder no longer",
                   interval=0.01)
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_parse_holder_is_lenient():
    assert parse_holder("42 etl-1 1764658800\n") == Holder(42, "etl-1", 1764658800.0)
    assert parse_holder("") == Holder(None, None, None)
    assert parse_holder("garbage here x") == Holder(None, "here", None)
    assert parse_holder("").describe() == "an unknown process"


def test_lock_sources_names_the_busy_source_and_holds_none_after_refusing(tmp_path):
    project = _project(tmp_path)
    other = source_lock(project.state_dir, "Invoices")
    assert other.try_acquire()
    with pytest.raises(Busy) as err:
        lock_sources(project, [_wf("A", "Orders"), _wf("B", "Invoices")])
    text = str(err.value)
    assert "source Invoices (workflow B) is already being read by another postline run" in text
    assert f"pid {os.getpid()}" in text and "--workflow" in text and "\n" not in text
    # the lock of Orders, taken before Invoices was found busy, was given back
    assert source_lock(project.state_dir, "Orders").try_acquire()
    other.release()
    held = lock_sources(project, [_wf("B", "Invoices")])
    assert [lk.held for lk in held] == [True]
    for lk in held:
        lk.release()


def test_sources_with_odd_names_get_distinct_lock_files(tmp_path):
    a = source_lock(tmp_path, "Rechnungen/Eingang")
    b = source_lock(tmp_path, "Rechnungen_Eingang")
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path / "locks"
    assert a.try_acquire() and b.try_acquire()
    a.release()
    b.release()
