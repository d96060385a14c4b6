"""The JSONL sink: one write + fsync per batch, and an index that survives losing its tail."""

from __future__ import annotations

import json

import pytest

from postline.protocols.base import MessageRef, RawMessage
from postline.workflow.jsonl_sink import JsonlSink

RAW = RawMessage(ref=MessageRef(folder="INBOX", folder_version="1", id="1"), data=b"x")


def write(path, keys, *, flush=True):
    sink = JsonlSink(path=path)
    sink.open()
    for k in keys:
        sink.write({"key": k, "subject": "Grüße ☃"}, RAW)
    if flush:
        sink.flush()
    sink.close()


def keys_in(path):
    return [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_lines_are_written_at_flush_and_keys_never_twice(tmp_path):
    out = tmp_path / "m.jsonl"
    write(out, ["a", "b"])
    write(out, ["b", "c"])
    assert keys_in(out) == ["a", "b", "c"]
    assert "Grüße ☃" in out.read_text(encoding="utf-8")   # UTF-8, not \\u escapes


def test_unflushed_lines_are_not_written_and_may_come_again(tmp_path):
    out = tmp_path / "m.jsonl"
    write(out, ["a"], flush=False)      # the batch never reached its commit
    assert not out.exists() or out.read_bytes() == b""
    write(out, ["a"])
    assert keys_in(out) == ["a"]


@pytest.mark.parametrize("damage", [b"", b"12", b"\x00\x00\x00\x00\n", b"999999 zz\n",
                                    b"not a number\n"])
def test_a_lost_or_torn_index_tail_is_rebuilt_from_the_file(tmp_path, damage):
    out = tmp_path / "m.jsonl"
    write(out, ["a", "b"])
    idx = tmp_path / "m.jsonl.keys"
    first = idx.read_bytes().split(b"\n")[0] + b"\n"
    idx.write_bytes(first + damage)     # power loss: the index lost its tail (never fsynced)
    write(out, ["a", "b", "c"])
    assert keys_in(out) == ["a", "b", "c"]
    offsets = [int(line.split()[0]) for line in idx.read_text().splitlines()]
    assert offsets == sorted(offsets) and offsets[-1] == out.stat().st_size


def test_a_failed_open_leaves_nothing_half_open_and_can_be_retried(tmp_path):
    out = tmp_path / "m.jsonl"
    sink = JsonlSink(path=out)
    index_path = sink._file.index_path
    index_path.mkdir()                  # the index cannot be opened as a file
    with pytest.raises(IsADirectoryError):
        sink.open()
    index_path.rmdir()
    sink.open()                         # a retry opens both files, so the batch is written
    sink.write({"key": "a"}, RAW)
    sink.flush()
    sink.close()
    assert keys_in(out) == ["a"]


def test_a_write_that_fails_half_way_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk in the middle of a batch: the lines written so far are cut off again,
    so the batch written later (same process) does not follow half a line."""
    import errno
    import os

    from postline.workflow import jsonl_sink

    out = tmp_path / "m.jsonl"
    write(out, ["a"])
    real_writev = os.writev

    def half(fd, chunks):
        os.write(fd, b"".join(chunks)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    sink = JsonlSink(path=out)
    sink.open()
    for k in ("b", "c"):
        sink.write({"key": k, "subject": "s"}, RAW)
    monkeypatch.setattr(jsonl_sink.os, "writev", half)
    with pytest.raises(OSError):
        sink.flush()
    assert keys_in(out) == ["a"]                # nothing torn after the line before
    monkeypatch.setattr(jsonl_sink.os, "writev", real_writev)
    sink.flush()                                # space again: the same lines, once
    sink.close()
    assert keys_in(out) == ["a", "b", "c"]
