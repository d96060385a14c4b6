"""The project as the console sees it: loaded again whenever one of its files changed on
disk (an edit from the console, an editor, ``git pull``), so pages never show stale assets."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from postline.assets.secrets import PUBLIC_KEY_FILE
from postline.assets.yamlfiles import find_files


def _fingerprint(project: Any) -> tuple:
    out = []
    for path in find_files(project.root, skip=(project.state_dir,)) + \
            [project.root / PUBLIC_KEY_FILE]:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


class Workspace:
    """Holds the current :class:`postline.project.Project` of a ``serve``."""

    def __init__(self, *, project: Any) -> None:
        self._project = project
        self._stamp = _fingerprint(project)
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._project.root

    @property
    def state_dir(self) -> Path:
        return self._project.state_dir

    @property
    def project(self) -> Any:
        """The project, loaded again first if a file changed since the last load. Raises
        ConfigError when the directory stopped being a project (the last load is kept)."""
        with self._lock:
            stamp = _fingerprint(self._project)
            if stamp != self._stamp:
                self._project = self._project.reload()
                self._stamp = stamp
            return self._project

    def check(self, overrides: dict[Path, str]) -> Any:
        """The project as it would be with ``overrides`` (path -> text) written."""
        return self._project.reload(overrides=overrides)
