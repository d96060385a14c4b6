"""Where a source's delta cursors live between rounds (Microsoft Graph delta links).

A reader whose capabilities say ``delta`` (Graph) answers ``list_messages(cursor=link)``
with what changed since ``link``. Keeping the link of a folder between rounds, and runs,
makes an idle round cost one request instead of a listing of the whole folder.

The links live in ``<state dir>/delta-links.sqlite3``, apart from the ledger (its own small
file, so the ledger's schema is not touched), with the ledger's version scheme: a ``meta``
row ``version``; a file written by a newer postline is refused, never written. Schema 1::

    meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)          -- ('version', '1')
    delta_links(source TEXT, folder TEXT, folder_version TEXT, link TEXT, updated REAL,
                PRIMARY KEY (source, folder))

A link is only a shortcut: losing it (a deleted file, ``ledger reset``) costs one full
listing, which the ledger then filters as before. It is written only after a round worked
through everything it listed, so a round cut short by a timeout, a throttle or a crash
starts again from the link before it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from postline.errors import ConfigError, StorageError

DELTA_LINKS_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delta_links (
  source TEXT NOT NULL, folder TEXT NOT NULL, folder_version TEXT NOT NULL,
  link TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (source, folder));
"""


def delta_links_path(state_dir: Path) -> Path:
    """Where a project's delta links live."""
    return Path(state_dir) / "delta-links.sqlite3"


class DeltaLinks:
    """The stored delta link of each (source, folder). Thread-safe.

    Raises ConfigError when the file cannot be opened or is newer than this postline,
    StorageError when a write fails (a full disk)."""

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)",
                             (str(DELTA_LINKS_VERSION),))
            found = self._db.execute("SELECT value FROM meta WHERE name='version'").fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(f"delta links {self.path} cannot be opened: {exc}",
                              hint="check the state directory's permissions and free space"
                              ) from exc
        if found and int(found[0]) > DELTA_LINKS_VERSION:
            self._db.close()
            raise ConfigError(f"delta links {self.path} were written by a newer postline "
                              f"(version {found[0]}, this one knows {DELTA_LINKS_VERSION})",
                              hint="upgrade postline on this host, or delete the file (the "
                                   "next round lists the folder in full)")

    def get(self, source: str, folder: str, folder_version: str) -> str | None:
        """The link of ``folder`` if it was taken from the same folder (id or UIDVALIDITY)."""
        with self._lock:
            row = self._db.execute(
                "SELECT link FROM delta_links WHERE source=? AND folder=? AND folder_version=?",
                (source, folder, folder_version)).fetchone()
        return row[0] if row else None

    def put(self, source: str, folder: str, folder_version: str, link: str) -> None:
        """Remember ``link`` as the place the next round of ``folder`` starts from."""
        self._write("INSERT INTO delta_links VALUES (?,?,?,?,?) ON CONFLICT (source, folder) "
                    "DO UPDATE SET folder_version=excluded.folder_version, "
                    "link=excluded.link, updated=excluded.updated",
                    (source, folder, folder_version, link, time.time()))

    def forget(self, source: str) -> None:
        """Drop every link of ``source``: its next round lists its folders in full (what a
        ledger reset needs, so that reset mails still in the folder are read again)."""
        self._write("DELETE FROM delta_links WHERE source=?", (source,))

    def _write(self, sql: str, args: tuple) -> None:
        with self._lock:
            try:
                self._db.execute(sql, args)
            except sqlite3.OperationalError as exc:
                raise StorageError(f"cannot write the delta links {self.path}: {exc} (is the "
                                   "disk full or read-only?)") from exc

    def close(self) -> None:
        """Release the database; never raises."""
        try:
            self._db.close()
        except sqlite3.Error:
            pass


def forget_links(state_dir: Path, source: str) -> None:
    """:meth:`DeltaLinks.forget` for ``source`` when the project has delta links at all."""
    path = delta_links_path(state_dir)
    if not path.exists():
        return
    links = DeltaLinks(path=path)
    try:
        links.forget(source)
    finally:
        links.close()
