"""``postline ledger retry``: give failed mails another round, after the cause was fixed.

A failed mail sits in the source's error folder (or, without one, still in the input
folder; POP3: on the server unless ``pop3.error: delete``), and its ledger entry says
``failed`` so that it is not read again. Retrying one:

1. finds it in the error folder: where the reader's ids survive moves (Microsoft Graph's
   immutable ids) by the id the ledger holds, without downloading anything (Exchange
   regenerates downloaded MIME, so its hash is not stable); otherwise, and for what is
   left, by the identity the ledger holds (its Message-ID, or ``sha256:`` of the raw mail
   for one without), reading the folder in chunks and stopping as soon as every wanted
   mail is found;
2. moves it back into the input folder;
3. only then forgets the failed entry: a crash between the two leaves a mail in the input
   folder that is processed (a failed entry never blocks a new UID), never a forgotten
   mail in the error folder.

Mails still in place (no error folder, a move that never happened, POP3 ``keep``) only
have their entry forgotten. The next round of ``postline run`` processes them all.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from postline.chunks import chunks
from postline.errors import StorageError
from postline.files import make_dirs
from postline.protocols.base import MailboxReader, MessageRef, RawMessage
from postline.source.filters import AttachmentRules
from postline.source.parse import parse_mail
from postline.source.record import header_summary
from postline.state.ledger import Entry, Ledger
from postline.workflow.mailjob import content_hash
from postline.workflow.runner import server_action

CHUNK = 100


@dataclass
class RetryReport:
    reset: list[str] = field(default_factory=list)     # keys forgotten: read on the next round
    moved: int = 0                                     # of those, mails moved back
    problems: list[str] = field(default_factory=list)  # one line per mail left as failed


def identities(raw: RawMessage, work_dir: Path) -> tuple[str | None, str]:
    """(Message-ID as the runner records it, ``sha256:`` of the raw mail)."""
    mid = None
    try:
        parsed = parse_mail(data=raw.data, path=raw.path, policy=AttachmentRules(),
                            work_dir=work_dir, prefix="retry-")
        mid = header_summary(parsed)["message_id"]
    except StorageError:
        raise
    except Exception:  # noqa: BLE001 - unreadable: it can still match by its hash
        pass
    return mid, f"sha256:{content_hash(raw)}"


def retry_failed(*, source, protocol: str, entries: list[Entry], ledger: Ledger,
                 reader_factory: Callable[[], MailboxReader], work_dir: Path) -> RetryReport:
    """Retry the failed ``entries`` of ``source`` (the EmailSource model). Raises
    ConnectError/AuthError when the mailbox cannot be reached (nothing changed then)."""
    report = RetryReport()
    folders = source.folders
    action, error = server_action(source, protocol, "failed")
    in_place: list[str] = []
    wanted: dict[str, list[Entry]] = {}
    for e in entries:
        if action == "delete" and e.settled:
            report.problems.append(f"{e.key}: deleted from the server after it failed "
                                   "(pop3.error: delete); nothing left to retry")
        elif not e.settled or action != "move":
            in_place.append(e.key)
        else:
            wanted.setdefault(e.message_id or f"no-identity:{e.key}", []).append(e)
    found: list[str] = []
    if wanted:
        make_dirs(work_dir)
        try:
            with reader_factory() as reader:
                if not reader.capabilities.stable_ids:
                    for ident in [i for i in wanted if i.startswith("no-identity:")]:
                        for e in wanted.pop(ident):
                            report.problems.append(
                                f"{e.key}: the ledger holds no identity to find it by in "
                                f"folder {error!r}; move it back by hand")
                refs = _find(reader, error, wanted, found, work_dir)
                if refs:
                    reader.move(refs, folders.input)
                    report.moved = len(refs)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        for left in wanted.values():
            for e in left:
                report.problems.append(f"{e.key}: not found in folder {error!r} (moved or "
                                       "deleted there since?); it stays failed")
    keys = in_place + found
    if keys:
        ledger.reset(source.name, keys)
    report.reset = keys
    return report


def _find(reader: MailboxReader, folder: str, wanted: dict[str, list[Entry]],
          found: list[str], work_dir: Path) -> list[MessageRef]:
    """The refs in ``folder`` of the wanted identities (each entry matched once); the keys
    of the matched entries go to ``found``, the unmatched stay in ``wanted``."""
    reader.open_folder(folder)
    listed, _ = reader.list_messages(folder)
    matched: list[MessageRef] = []
    if reader.capabilities.stable_ids:
        by_server_id = {e.server_id: ident for ident, es in wanted.items() for e in es}
        rest = []
        for ref in listed:
            ident = by_server_id.pop(ref.id, None)
            if ident is None:
                rest.append(ref)
                continue
            entry = next(e for e in wanted[ident] if e.server_id == ref.id)
            wanted[ident].remove(entry)
            if not wanted[ident]:
                del wanted[ident]
            found.append(entry.key)
            matched.append(ref)
        listed = rest
    # entries without Message-ID can only be found by id: not worth a download
    hopeless = {i: wanted.pop(i) for i in list(wanted) if i.startswith("no-identity:")}
    for chunk in chunks(listed if wanted else [], CHUNK):
        for raw in reader.fetch(chunk, spool_dir=work_dir):
            try:
                ids = identities(raw, work_dir)
            finally:
                raw.discard()
            for ident in ids:
                if ident and ident in wanted:
                    found.append(wanted[ident].pop(0).key)
                    if not wanted[ident]:
                        del wanted[ident]
                    matched.append(raw.ref)
                    break
        if not wanted:
            break
    wanted.update(hopeless)   # reported as not found
    return matched
