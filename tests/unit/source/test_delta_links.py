"""The delta links of sources (source/delta_links.py): per folder, versioned, forgettable."""

from __future__ import annotations

import sqlite3

import pytest

from postline.errors import ConfigError
from postline.source.delta_links import DeltaLinks, delta_links_path, forget_links


def test_links_per_source_and_folder_version(tmp_path):
    links = DeltaLinks(path=delta_links_path(tmp_path))
    assert links.get("Src", "inbox", "F1") is None
    links.put("Src", "inbox", "F1", "https://g/v1.0/delta?$deltatoken=a")
    links.put("Src", "inbox", "F1", "https://g/v1.0/delta?$deltatoken=b")
    links.put("Other", "inbox", "F1", "https://g/v1.0/delta?$deltatoken=c")
    assert links.get("Src", "inbox", "F1").endswith("=b")
    assert links.get("Src", "inbox", "F2") is None       # another folder behind the name
    links.close()
    forget_links(tmp_path, "Src")
    again = DeltaLinks(path=delta_links_path(tmp_path))
    assert again.get("Src", "inbox", "F1") is None
    assert again.get("Other", "inbox", "F1").endswith("=c")
    again.close()


def test_a_newer_file_is_refused_and_no_file_is_fine(tmp_path):
    forget_links(tmp_path, "Src")                          # nothing to forget: no file made
    assert not delta_links_path(tmp_path).exists()
    DeltaLinks(path=delta_links_path(tmp_path)).close()
    db = sqlite3.connect(delta_links_path(tmp_path))
    db.execute("UPDATE meta SET value='9' WHERE name='version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="written by a newer postline \\(version 9"):
        DeltaLinks(path=delta_links_path(tmp_path))
