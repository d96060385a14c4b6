"""Scratch files of stored parts: unique names, nothing left behind, named only when used;
and the store thread that hashes and writes them."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from postline.source.attachments import Attachment, Scratch, _hash_and_store, _Store


def test_part_files_never_share_a_name_and_clear_removes_what_is_left(tmp_path):
    named = []
    (tmp_path / "work").mkdir()
    scratch = Scratch(tmp_path / "work", lambda: named.append(1) or "k-")
    a = scratch.new_file()
    a.write_bytes(b"a")
    a.unlink()
    scratch.forget(a)                    # rejected by a size limit, say
    b = scratch.new_file()
    b.write_bytes(b"b")
    c = scratch.new_file()
    c.write_bytes(b"c")
    assert len({a, b, c}) == 3 and named == [1]
    c.rename(tmp_path / "home")          # moved to its home
    scratch.forget(c)
    scratch.clear()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []
    assert (tmp_path / "home").read_bytes() == b"c"


def test_a_mail_without_stored_parts_makes_no_directory(tmp_path):
    Scratch(tmp_path / "work", lambda: 1 / 0).clear()
    assert not (tmp_path / "work").exists()


def test_the_store_thread_hashes_and_writes_every_chunk_in_order(tmp_path):
    chunks = [os.urandom(1 << 20) for _ in range(3 * _Store.PART_BYTES // (1 << 20))]
    target = tmp_path / "part"
    size, pending = _hash_and_store(iter(chunks), target)
    assert size == sum(map(len, chunks))
    assert pending.result() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert target.read_bytes() == b"".join(chunks)   # written and closed once resolved


def test_a_failed_write_is_raised_where_the_hash_is_read(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    size, pending = _hash_and_store([b"x" * 100_000], Path("/dev/full"))
    att = Attachment(filename="a.bin", content_type="application/octet-stream",
                     disposition="attachment", content_id=None, size=size, sha256=pending,
                     temp_path=None, skipped_reason=None)
    with pytest.raises(OSError) as info:
        att.sha256  # noqa: B018 (the property read is what raises)
    assert info.value.errno == errno.ENOSPC


def test_a_decoder_error_midway_closes_the_file_and_is_raised_at_once(tmp_path):
    def chunks():
        yield b"a" * 1000
        raise ValueError("bad base64")

    with pytest.raises(ValueError, match="bad base64"):
        _hash_and_store(chunks(), tmp_path / "part")


def test_parts_stored_from_several_threads_at_once_stay_whole(tmp_path):
    """Several workflows share the one store thread: each part's chunks in order."""
    parts = {i: [os.urandom(256 * 1024) for _ in range(12)] for i in range(6)}
    results: dict[int, str] = {}

    def store(i: int) -> None:
        results[i] = _hash_and_store(iter(parts[i]), tmp_path / f"{i}.part")[1].result()

    threads = [threading.Thread(target=store, args=(i,)) for i in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, chunks in parts.items():
        whole = b"".join(chunks)
        assert results[i] == hashlib.sha256(whole).hexdigest()
        assert (tmp_path / f"{i}.part").read_bytes() == whole
