"""Scratch files of stored parts: unique names, nothing left behind, named only when used."""

from __future__ import annotations

from postline.source.attachments import Scratch


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
