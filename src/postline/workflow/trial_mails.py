"""The mails ``postline try`` runs a workflow on: ``.eml`` files, a directory of them, a
Maildir or an mbox file (read with the standard library's :mod:`mailbox`), or the newest
mails of the source's input folder, read without changing anything on the server
(``--peek``).

Each comes as ``(name, RawMessage)``: ``name`` is what the user recognises (the file, the
Maildir or mbox entry, or the ledger key of a peeked mail), and the message's
:class:`MessageRef` places it in the source's input folder, as a round would have found
it there (``folder_version`` ``try`` and the file's name as its id, for files). Its
received time, which a server gives as INTERNALDATE, is the file's modification time (a
Maildir's delivery time) or an mbox entry's ``From`` line date.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from postline.errors import ConfigError
from postline.protocols.base import MailboxReader, MessageRef, RawMessage
from postline.source.headers import iso_utc
from postline.source.record import ledger_key

TRIAL_VERSION = "try"   # the folder_version of mails read from files


@dataclass(frozen=True)
class MailFile:
    """One FILE argument: ``kind`` is ``eml``, ``emls`` (a directory of .eml files),
    ``maildir`` or ``mbox``."""

    kind: str
    path: Path
    shown: str            # the path as the user typed it


def mail_files(paths: list[str]) -> list[MailFile]:
    """What each of ``paths`` is. Raises ConfigError naming the first path that is not a
    mail file, a directory of ``.eml`` files, a Maildir (``cur/`` and ``new/``) or an mbox
    file (its first line starts with ``From``)."""
    out: list[MailFile] = []
    for shown in paths:
        path = Path(shown).expanduser()
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                out.append(MailFile(kind="maildir", path=path, shown=shown))
            elif any(p.is_file() for p in path.glob("*.eml")):
                out.append(MailFile(kind="emls", path=path, shown=shown))
            else:
                raise ConfigError(f"{shown}: a directory that is neither a Maildir (cur/ and "
                                  "new/) nor holds .eml files",
                                  hint="give .eml files, a Maildir or an mbox file")
            continue
        try:
            with path.open("rb") as fh:
                head = fh.read(5)
        except FileNotFoundError:
            raise ConfigError(f"{shown}: no such file",
                              hint="give .eml files, a Maildir or an mbox file") from None
        except OSError as exc:
            raise ConfigError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
        if not head:
            raise ConfigError(f"{shown}: the file is empty, not a mail")
        out.append(MailFile(kind="mbox" if head == b"From " else "eml", path=path,
                            shown=shown))
    return out


def read_files(files: list[MailFile], *, connection: str, folder: str
               ) -> Iterator[tuple[str, RawMessage]]:
    """Every mail of ``files`` in order (a Maildir's by file name, which starts with the
    delivery time; an mbox file's as stored), placed in ``folder`` of ``connection``.
    Raises OSError, and ConfigError for a Maildir or mbox file the mailbox module cannot
    read."""
    used: set[str] = set()

    def unique(name: str) -> str:
        # two files of one name in different directories still get two keys (the sinks
        # keep one record per key)
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}~{n}"
        used.add(candidate)
        return candidate

    def raw(name: str, data: bytes, received: float | None) -> RawMessage:
        ref = MessageRef(folder=folder, folder_version=TRIAL_VERSION, id=unique(name),
                         size=len(data), internal_date=None if received is None else
                         iso_utc(datetime.fromtimestamp(received, UTC)))
        return RawMessage(ref=ref, data=data)

    for f in files:
        if f.kind == "eml":
            yield f.shown, raw(f.path.name, f.path.read_bytes(), f.path.stat().st_mtime)
        elif f.kind == "emls":
            for p in sorted(q for q in f.path.glob("*.eml") if q.is_file()):
                yield (str(Path(f.shown) / p.name),
                       raw(p.name, p.read_bytes(), p.stat().st_mtime))
        elif f.kind == "maildir":
            box = mailbox.Maildir(f.path, factory=None, create=False)
            for key in sorted(box.keys()):
                data = box.get_bytes(key)
                yield f"{f.shown} {key}", raw(key, data, box.get_message(key).get_date())
        else:
            box = mailbox.mbox(f.path, create=False)
            try:
                for n, key in enumerate(box.keys(), start=1):
                    yield (f"{f.shown} #{n}", raw(f"{f.path.name}#{n}", box.get_bytes(key),
                                                  _from_line_time(box.get_message(key))))
            finally:
                box.close()


def _from_line_time(message: mailbox.mboxMessage) -> float | None:
    """The date of an mbox entry's ``From sender date`` line (asctime, taken as UTC), or
    None when it has none that can be read."""
    parts = message.get_from().split(None, 1)
    if len(parts) < 2:
        return None
    try:
        when = datetime.strptime(" ".join(parts[1].split()[:5]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return when.replace(tzinfo=UTC).timestamp()


def peek(open_reader: Callable[[], MailboxReader], *, connection: str, folder: str, n: int,
         spool_dir: Path, inline_limit: int) -> Iterator[tuple[str, RawMessage]]:
    """The ``n`` newest mails of ``folder``, fetched through a reader that opened it
    read-only (IMAP EXAMINE and BODY.PEEK, POP3 TOP without DELE, Graph GETs): no flag
    changes, nothing moved. Named by their ledger key. Raises what the reader raises
    (ConnectError, AuthError, ConfigError for a missing folder)."""
    with open_reader() as reader:
        reader.open_folder(folder, readonly=True)
        refs, _ = reader.list_messages(folder)
        newest = refs[-n:] if n else []
        for got in reader.fetch(newest, spool_dir=spool_dir, inline_limit=inline_limit,
                                batch_size=max(len(newest), 1)):
            ref = got.ref
            yield ledger_key(connection, ref.folder, ref.folder_version, ref.id), got
