"""Private files and directories, made whatever the umask and without following links.

State (the ledger, the outbox, token caches, locks, spooled mails, scratch files) is created
0700 (directories) and 0600 (files); sink output gets the sink's ``mode`` (0600 files and
0700 directories by default). Modes are set with ``chmod`` after creation, so a loose umask
cannot widen them (it can only narrow what ``open``/``mkdir`` give).

:class:`SafeDir` holds a directory open and creates, replaces and removes its entries
relative to that descriptor (``openat`` with ``O_EXCL | O_NOFOLLOW``, ``mkdirat``,
``renameat``): a symbolic link planted in a sink's directory, where file names are
predictable from the ledger key, is refused with :class:`UnsafePathError`, never followed.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from pathlib import Path

from postline.errors import UnsafePathError

log = logging.getLogger("postline.files")

FILE_MODE = 0o600
DIR_MODE = 0o700
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def dir_mode_for(file_mode: int) -> int:
    """The mode of directories holding files of ``file_mode``: search where read is
    allowed (0600 -> 0700, 0640 -> 0750, 0644 -> 0755)."""
    return file_mode | ((file_mode & 0o444) >> 2)


def make_dirs(path: Path, mode: int = DIR_MODE) -> Path:
    """``mkdir -p path``: every directory it creates gets ``mode`` exactly; existing ones
    are left as they are. Returns ``path``; raises OSError."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        os.chmod(d, mode)
    return path


def private_sqlite(path: Path) -> None:
    """Before ``sqlite3.connect(path)``: its directory made (0700), the database file
    created 0600 when new, and an existing one (with its ``-wal``, ``-shm``, ``-journal``)
    closed to group and others. SQLite creates those side files with the database file's
    mode. Raises OSError."""
    path = Path(path)
    make_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        set_mode(fd, FILE_MODE, path, only_tighten=True)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        try:
            fd = os.open(side, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:   # none (or a link: not ours to change)
            continue
        try:
            set_mode(fd, FILE_MODE, side, only_tighten=True)
        finally:
            os.close(fd)


def set_mode(fd: int, mode: int, path: Path, *, only_tighten: bool = False) -> None:
    """Give the open file ``fd`` (at ``path``) ``mode``; ``only_tighten``: only when group
    or others may read it now. A file of another user (a shared setup) is left as it is,
    with a warning. Raises OSError otherwise."""
    now = stat.S_IMODE(os.fstat(fd).st_mode)
    if now == mode or (only_tighten and not now & 0o077):
        return
    try:
        os.fchmod(fd, mode)
    except PermissionError:
        log.warning("%s has mode %04o and is not ours to change to %04o", path, now, mode)


class SafeDir:
    """A directory held open by descriptor; its entries are made and changed relative to
    it, never through a symbolic link. ``where`` names it in messages."""

    __slots__ = ("path", "fd", "where")

    def __init__(self, *, path: Path, fd: int, where: str) -> None:
        self.path = Path(path)
        self.fd = fd
        self.where = where

    @classmethod
    def open(cls, path: Path, *, mode: int = DIR_MODE, where: str = "") -> SafeDir:
        """Open (making it, ``mode``) the configured directory ``path``; links in the path
        the user configured are followed (it is theirs). Raises OSError."""
        make_dirs(path, mode)
        return cls(path=path, fd=os.open(path, _DIR_FLAGS), where=where or str(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refuse(self, name: str, what: str) -> UnsafePathError:
        return UnsafePathError(f"{self.where}: {name} is {what}; refused (postline does not "
                               "follow links in its output directories)",
                               hint="remove it; someone else may be able to write there")

    def kind(self, name: str) -> str | None:
        """``"file"``, ``"dir"`` or None (no such entry). Raises UnsafePathError for a
        symbolic link or any other kind of entry."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISREG(st.st_mode):
            return "file"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        raise self._refuse(name, "a symbolic link" if stat.S_ISLNK(st.st_mode)
                           else "not a regular file")

    def create(self, name: str, mode: int = FILE_MODE) -> int:
        """A new file ``name`` (``mode`` exactly), open for writing; a leftover regular
        file of that name is replaced. Returns the descriptor. Raises UnsafePathError when
        ``name`` is a link, OSError otherwise."""
        if self.kind(name) == "file":
            os.unlink(name, dir_fd=self.fd)
        try:
            fd = os.open(name, _CREATE, mode, dir_fd=self.fd)
        except FileExistsError:   # planted after the check
            raise self._refuse(name, "in the way (created by someone else)") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse(name, "a symbolic link") from None
            raise
        os.fchmod(fd, mode)
        return fd

    def write_new(self, name: str, *, data: bytes | None = None, source: Path | None = None,
                  mode: int = FILE_MODE) -> None:
        """Write ``data`` (or a copy of the file ``source``) to a new file ``name``.
        Raises UnsafePathError, OSError."""
        fd = self.create(name, mode)
        try:
            with open(fd, "wb", closefd=True) as out:
                if data is not None:
                    out.write(data)
                else:
                    assert source is not None
                    with open(source, "rb") as src:
                        _copy(src, out)
        except BaseException:
            self.unlink(name)
            raise

    def replace(self, src: str, dst: str) -> None:
        """Rename entry ``src`` over ``dst`` (refused when ``dst`` is a link or a
        directory). Raises UnsafePathError, OSError."""
        if self.kind(dst) == "dir":
            raise self._refuse(dst, "a directory")
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def move_in(self, source: Path, name: str) -> None:
        """Move the file ``source`` (another directory, maybe another file system) to
        entry ``name``. Raises UnsafePathError, OSError."""
        if self.kind(name) == "dir":
            raise self._refuse(name, "a directory")
        try:
            os.replace(source, name, dst_dir_fd=self.fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            mode = stat.S_IMODE(os.stat(source).st_mode)
            self.write_new(name, source=source, mode=mode)
            os.unlink(source)

    def subdir(self, name: str, *, mode: int = DIR_MODE) -> tuple[SafeDir, bool]:
        """The directory entry ``name``, made (``mode``) when missing; returns it open and
        whether it was made now. Raises UnsafePathError when ``name`` is a link or a
        file, OSError otherwise."""
        made = False
        try:
            os.mkdir(name, mode, dir_fd=self.fd)
            made = True
        except FileExistsError:
            pass
        try:
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self.kind(name)   # names a link as a link
                raise self._refuse(name, "not a directory") from None
            raise
        sub = SafeDir(path=self.path / name, fd=fd, where=f"{self.where}/{name}")
        if made:
            os.fchmod(fd, mode)
        return sub, made

    def unlink(self, name: str) -> None:
        """Remove entry ``name`` (a link itself, never its target) if it is there."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def rmdir(self, name: str) -> None:
        """Remove the empty directory ``name``; a missing or non-empty one is left."""
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError:
            pass


def _copy(src, out) -> None:
    """Copy file ``src`` to ``out`` in the kernel (``sendfile``, as ``shutil.copyfile``
    does) where it can, else through a 1 MB buffer."""
    try:
        while os.sendfile(out.fileno(), src.fileno(), None, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
    shutil.copyfileobj(src, out, 1 << 20)
