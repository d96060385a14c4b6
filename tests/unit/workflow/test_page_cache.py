"""A synced file's pages leave the page cache, all but a partly filled last page (the next
JSONL append would read it back from the disk first)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys

import pytest

from postline.workflow.commit import sync_path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="mincore and posix_fadvise as on Linux")


def resident_pages(path) -> tuple[int, int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            first = ctypes.c_char.from_buffer(m)
            assert libc.mincore(ctypes.c_void_p(ctypes.addressof(first)),
                                ctypes.c_size_t(size), vec) == 0
            del first
            return sum(v & 1 for v in vec), pages
        finally:
            m.close()
    finally:
        os.close(fd)


def fs_type(path) -> str:
    """The type of the file system holding ``path`` (longest mount point that contains it)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as fh:
        for line in fh:
            _, mnt, typ, *_ = line.split()
            if str(path).startswith(mnt.rstrip("/") + "/") and len(mnt) > len(best):
                best, kind = mnt, typ
    return kind


def test_synced_file_keeps_only_its_last_partial_page(tmp_path):
    if fs_type(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("on tmpfs the page cache is the file")
    path = tmp_path / "records.jsonl"
    path.write_bytes(os.urandom(10 * mmap.PAGESIZE + 100))
    assert resident_pages(path) == (11, 11)
    sync_path(path, data_only=True, drop_cache=True)
    assert resident_pages(path) == (1, 11)


def test_a_file_smaller_than_a_page_stays_cached(tmp_path):
    path = tmp_path / "small.json"
    path.write_bytes(b"{}\n")
    sync_path(path, data_only=True, drop_cache=True)
    assert resident_pages(path) == (1, 1)


def test_without_drop_cache_the_pages_stay(tmp_path):
    path = tmp_path / "kept.bin"
    path.write_bytes(os.urandom(4 * mmap.PAGESIZE))
    sync_path(path, data_only=True)
    assert resident_pages(path) == (4, 4)
