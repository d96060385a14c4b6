"""Processing one fetched mail: parse -> filter -> duplicate check -> record -> processor ->
every sink. Returns what the ledger should say; it never moves anything on the server.

Two steps, so that the runner can look up the duplicates of a whole batch in one ledger
query: :func:`prepare` (parse, filters) and :func:`deliver` (duplicate check, record,
processor, sinks). :func:`process` does both for one mail.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from postline.errors import DeliveryError, ParseError, PostlineError, StorageError, storage_error
from postline.files import FILE_MODE, SafeDir, dir_mode_for
from postline.protocols.base import RawMessage
from postline.retry import backoff
from postline.source.filters import AttachmentRules, MailFilter
from postline.source.fingerprint import fingerprint
from postline.source.headers import iso_utc
from postline.source.mime import ParsedMail
from postline.source.parse import parse_mail
from postline.source.record import MailPlace, build_record, file_key, header_summary, safe_name
from postline.source.schedule import Clock
from postline.state.ledger import Entry, LedgerState, Outcome
from postline.workflow.processor import Context, Ignore, Processor, ProcessorError, apply
from postline.workflow.sinks import DirectorySink, Sink

log = logging.getLogger("postline.mail")


@dataclass
class MailSettings:
    """What a job needs to know about its source and workflow (built once per runner)."""

    source: str
    connection: str
    stream_name: Callable[[dict[str, str]], str]
    mail_filter: MailFilter
    attachments: AttachmentRules
    reprocess: str
    on_failure: str
    max_retries: int
    min_backoff: float
    max_backoff: float
    work_dir: Path
    attachments_home: Callable[[str], Path]
    sinks: list[Sink] = field(default_factory=list)
    processor: Processor | None = None
    context: Context | None = None
    file_mode: int = FILE_MODE      # of stored attachments (their directory: dir_mode_for)


@dataclass
class JobResult:
    outcome: Outcome
    label: str            # done | failed | ignored | duplicate | interrupted
    subject: str
    ms: float
    files: tuple[Path, ...] = ()   # attachments stored (made durable with the batch)


def content_hash(raw: RawMessage) -> str:
    """SHA-256 of the raw mail, streaming for spooled ones."""
    h = hashlib.sha256()
    if raw.data is not None:
        h.update(raw.data)
    else:
        with raw.open() as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _utc(text: str | None) -> str | None:
    if not text:
        return None
    if _ISO_UTC.fullmatch(text):  # already the record's form (IMAP INTERNALDATE)
        return text
    try:
        return iso_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def place_of(raw: RawMessage, connection: str) -> MailPlace:
    """Where ``raw`` was read (connection, folder, UIDVALIDITY, server id, received time),
    as the ledger records it. Never raises: an unreadable date becomes None."""
    ref = raw.ref
    return MailPlace(connection=connection, folder=ref.folder,
                     folder_version=ref.folder_version, server_id=ref.id,
                     received=_utc(ref.internal_date))


@dataclass
class Prepared:
    """A mail parsed and past the filters, waiting for the duplicate check and delivery."""

    raw: RawMessage
    place: MailPlace
    key: str
    parsed: ParsedMail
    summary: dict[str, Any]
    subject: str
    identity: str
    digest: str | None
    ms: float             # time spent so far (parsing)


@dataclass(frozen=True)
class DoneMail:
    """What the duplicate check needs of a mail already done (a ledger entry, or a mail
    done earlier in the same batch). ``fingerprint`` None: an entry of ledger version 1,
    which matches any content."""

    key: str
    folder_version: str
    content_hash: str | None
    fingerprint: str | None = None

    @classmethod
    def of(cls, entry: Entry) -> DoneMail:
        """The DoneMail of a ledger Entry."""
        return cls(key=entry.key, folder_version=entry.folder_version,
                   content_hash=entry.content_hash, fingerprint=entry.fingerprint)


def _duplicate(s: MailSettings, prep: Prepared, fp: str, done: list[DoneMail]
               ) -> tuple[str, bool] | None:
    """``(key, reread)`` of the done mail that ``prep`` (fingerprint ``fp``) repeats when
    the reprocess mode says skip it, else None. ``done`` holds the done mails with the
    same Message-ID, oldest first. A duplicate must agree in content too: a different mail
    that reuses a Message-ID is processed. ``reread``: the done mail was read before the
    folder's UIDVALIDITY changed, so this is that very mail listed again, not a copy."""
    others = [d for d in done if d.key != prep.key]
    if not others:
        return None
    last = others[-1]
    if s.reprocess == "reprocess_on_change" and \
            last.folder_version == prep.place.folder_version:
        # compared with the version processed last, byte for byte
        return (last.key, False) if last.content_hash == prep.digest else None
    same = [d for d in others if d.fingerprint is None or d.fingerprint == fp]
    if not same:
        return None
    first = same[0]
    if first.folder_version != prep.place.folder_version:
        return first.key, True  # re-read after a UIDVALIDITY change: already done, skip
    if s.reprocess == "manual":
        return first.key, False
    return None


class StoredParts:
    """The attachment files of one mail in their home (made without following links, see
    :class:`SafeDir`): their paths, and the way to take them back when the mail fails."""

    def __init__(self) -> None:
        self.home: SafeDir | None = None
        self.names: list[str] = []
        self.paths: list[Path] = []

    def remove(self) -> None:
        """Remove the files and, when that leaves it empty, their directory (a failed mail
        leaves nothing behind). Never raises."""
        if self.home is None:
            return
        for name in self.names:
            try:
                self.home.unlink(name)
            except OSError as exc:
                log.warning("cannot remove %s/%s: %s", self.home.path, name, exc)
        try:
            os.rmdir(self.home.path)   # (fails on a link: nothing is followed)
        except OSError:
            pass
        self.names, self.paths = [], []
        self.close()

    def close(self) -> None:
        if self.home is not None:
            self.home.close()
            self.home = None


def _store_attachments(record: dict[str, Any], parsed: ParsedMail,
                       home_of: Callable[[], Path], mode: int, kept: StoredParts) -> None:
    """Move the stored parts to their home and set the record's ``path``s; ``kept`` lists
    them. A part's file name is ``NN-<name cut to 200 bytes>`` (the record keeps the whole
    name). Raises UnsafePathError (a link where the home or a file goes), OSError."""
    for i, (att, rec) in enumerate(zip(parsed.attachments, record["attachments"], strict=False)):
        if att.temp_path is None:
            continue
        if kept.home is None:
            path = home_of()
            with SafeDir.open(path.parent, mode=dir_mode_for(mode)) as parent:
                kept.home, _ = parent.subdir(path.name, mode=dir_mode_for(mode))
        name = f"{i:02d}-{safe_name(att.filename or 'attachment')}"
        if mode != FILE_MODE:   # parts are made 0600; a rename keeps the mode
            os.chmod(att.temp_path, mode)
        kept.home.move_in(att.temp_path, name)
        if parsed.scratch is not None:
            parsed.scratch.forget(att.temp_path)
        target = kept.home.path / name
        kept.names.append(name)
        kept.paths.append(target)
        rec["path"] = str(target)


def _result(prep_key: str, t0: float, state: str, label: str, subject: str,
            reason: str | None = None, identity: str | None = None,
            digest: str | None = None, dup_of: str | None = None,
            parsed: ParsedMail | None = None, fp: str | None = None,
            settled: bool = False) -> JobResult:
    if parsed is not None:
        _release(parsed)
    out = Outcome(key=prep_key, state=state, reason=reason, message_id=identity,
                  content_hash=digest, subject=subject[:300], dup_of=dup_of,
                  settled=settled, fingerprint=fp)
    return JobResult(outcome=out, label=label, subject=subject,
                     ms=(time.perf_counter() - t0) * 1000)


def prepare(raw: RawMessage, *, s: MailSettings) -> Prepared | JobResult:
    """Parse ``raw`` and apply the filters. Returns what is to be delivered, or the final
    result of a mail that ends here (unparseable: failed; filtered out: ignored). Never
    raises for a mail's own problems; lets StorageError (disk full) out."""
    t0 = time.perf_counter()
    place = place_of(raw, s.connection)
    key = place.key
    # The content hash costs a pass over the raw mail: taken only where it is used (the
    # identity of a mail without Message-ID, and reprocess_on_change).
    digest = content_hash(raw) if s.reprocess == "reprocess_on_change" else None
    # Scratch files of the parser (only made for stored attachments) are named after the
    # key; the whole work dir is emptied when the runner starts.
    try:
        parsed = parse_mail(data=raw.data, path=raw.path, policy=s.attachments,
                            work_dir=s.work_dir, prefix=lambda: file_key(key) + "-")
    except ParseError as exc:
        digest = digest or content_hash(raw)
        return _result(key, t0, "failed", "failed", "", f"parse: {exc}", f"sha256:{digest}",
                       digest)
    try:
        summary = header_summary(parsed)
    except Exception as exc:  # noqa: BLE001 - one odd mail must not abort the whole batch
        # (the runner would retry the round and, in the end, fail its innocent neighbours)
        digest = digest or content_hash(raw)
        return _result(key, t0, "failed", "failed", "",
                       f"headers: {type(exc).__name__}: {exc}"[:500], f"sha256:{digest}",
                       digest, parsed=parsed)
    subject = summary["subject"]
    if not summary["message_id"] and digest is None:
        digest = content_hash(raw)
    identity = summary["message_id"] or f"sha256:{digest}"
    reason = s.mail_filter.reason_to_ignore(senders=summary["from"], subject=subject)
    if reason:
        return _result(key, t0, "ignored", "ignored", subject, reason, identity, digest,
                       parsed=parsed)
    return Prepared(raw=raw, place=place, key=key, parsed=parsed, summary=summary,
                    subject=subject, identity=identity, digest=digest,
                    ms=(time.perf_counter() - t0) * 1000)


def discard(prep: Prepared) -> None:
    """Drop the scratch files of a prepared mail that will not be delivered now."""
    _release(prep.parsed)


def _release(parsed: ParsedMail) -> None:
    # part files not moved to their home (a failure, a filter, a duplicate)
    if parsed.scratch is not None and parsed.scratch.files:
        parsed.scratch.clear()


def _take_back(sinks: list[Sink], key: str) -> None:
    """Discard what ``sinks`` accepted of mail ``key`` in the batch being written. Raises
    StorageError when a sink cannot (the mail then stays acquired and comes again)."""
    for sink in sinks:
        try:
            sink.discard(key)
        except OSError as exc:
            what = f"taking mail {key} back from {sink.where}"
            raise (storage_error(exc, what=what)
                   or StorageError.from_os_error(exc, what=what)) from exc


def deliver(prep: Prepared, *, s: MailSettings, done: list[DoneMail],
            stop: threading.Event, clock: Clock) -> JobResult:
    """Skip ``prep`` as a duplicate of one of ``done`` (the done mails with its Message-ID,
    oldest first) where content and reprocess mode say so, else build its record and hand
    it to the processor and every sink. Never raises for a mail's own problems (they
    become a ``failed`` outcome); lets ConnectError, StorageError (disk full,
    permissions: not the mail's fault) and stop requests out."""
    kept = StoredParts()
    try:
        return _deliver(prep, s=s, done=done, stop=stop, clock=clock, kept=kept)
    finally:
        kept.close()


def _deliver(prep: Prepared, *, s: MailSettings, done: list[DoneMail],
             stop: threading.Event, clock: Clock, kept: StoredParts) -> JobResult:
    key, subject, identity, digest = prep.key, prep.subject, prep.identity, prep.digest
    # the mail's own time: its parse plus this step (not the batch's other mails)
    t0 = time.perf_counter() - prep.ms / 1000
    parsed, place = prep.parsed, prep.place

    fp: str | None = None

    def result(state: str, label: str, reason: str | None = None,
               dup_of: str | None = None, settled: bool = False) -> JobResult:
        if state != LedgerState.DONE:
            kept.remove()   # a mail that is not done leaves no attachment behind
        return _result(key, t0, state, label, subject, reason, identity, digest, dup_of,
                       parsed, fp, settled)

    try:
        fp = fingerprint(parsed)   # waits for the attachment hashes, as the record does
    except Exception as exc:  # noqa: BLE001 - an attachment's write failed
        if (err := storage_error(exc, what="storing attachments")) is not None:
            raise err from exc
        return result("failed", "failed", f"record: {type(exc).__name__}: {exc}")
    dup = _duplicate(s, prep, fp, done)
    if dup:
        dup_key, reread = dup
        if reread:   # the very mail, listed again: left where it is
            return result("ignored", "duplicate",
                          f"duplicate of {dup_key} (same Message-ID and content, done "
                          "before the folder's UIDVALIDITY changed)", dup_key, settled=True)
        return result("ignored", "duplicate",
                      f"duplicate of {dup_key} (same Message-ID and content, already done); "
                      f"'postline ledger reset' that key to process it again", dup_key)
    summary = prep.summary
    macros = {"folder": place.folder, "subject": subject, "key": key,
              "from": summary["from"][0]["address"] if summary["from"] else "",
              "received": place.received or "", "message_id": identity,
              "id": place.server_id}
    try:
        record = build_record(parsed, place=place, source=s.source,
                              stream_name="", size=prep.raw.size, summary=summary)
        macros["date"] = record["date"] or ""
        macros["received"] = record["received"] or ""
        record["stream_name"] = s.stream_name(macros)
        _store_attachments(record, parsed, lambda: s.attachments_home(key), s.file_mode,
                           kept)
        for sink in s.sinks:
            if isinstance(sink, DirectorySink) and sink.keep_eml:
                record["eml_path"] = str(sink.eml_path(key))
                break
    except StorageError:
        raise
    except PostlineError as exc:
        return result("failed", "failed", f"record: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bad mail must not stop the source
        if (err := storage_error(exc, what="storing attachments")) is not None:
            raise err from exc
        return result("failed", "failed", f"record: {type(exc).__name__}: {exc}")
    attempt = 0
    while True:
        where = "processor"
        try:
            rec = record
            if s.processor is not None:
                rec = copy.deepcopy(record) if s.on_failure == "retry" else record
                if s.context is not None:
                    s.context.key = key
                rec = apply(s.processor, rec, s.context, key=key)
            accepted: list[Sink] = []   # the sinks that may hold part of this mail
            try:
                for sink in s.sinks:
                    where = f"{sink.label} sink"
                    accepted.append(sink)
                    sink.bind_stop(clock, stop)
                    try:
                        sink.write(rec, prep.raw)
                    except OSError as exc:
                        if (err := storage_error(exc, what=f"writing {sink.where}")) is not None:
                            raise err from exc
                        raise
                done_result = result("done", "done")
            except BaseException as exc:
                # all or nothing: what the sinks took of the mail goes (a retry writes anew)
                _take_back(accepted, key)
                if stop.is_set() and isinstance(exc, DeliveryError) and exc.retriable:
                    # a stop request ended a sink's retries: the next run takes the mail up
                    return result("acquired", "interrupted", f"{where}: {exc}"[:500])
                raise
            done_result.files = tuple(kept.paths)
            return done_result
        except Ignore as exc:  # the processor skips the mail on purpose: no retry
            return result("ignored", "ignored", exc.reason[:500])
        except Exception as exc:  # noqa: BLE001 - the processor is user code
            if isinstance(exc, StorageError):
                # the disk, not the mail: stop the round; the mail stays acquired and in
                # the input folder, and the next run delivers it (sinks are idempotent)
                raise
            # a ProcessorError says what was raised and where in the processor file
            what = (str(exc) if isinstance(exc, ProcessorError)
                    else f"{type(exc).__name__}: {exc}")
            why = f"{where}: {what}"[:500]
            if s.on_failure != "retry" or attempt >= s.max_retries:
                return result("failed", "failed", why)
            attempt += 1
            delay = backoff(attempt, first=s.min_backoff, cap=s.max_backoff)
            log.warning("key=%s retry %d/%d in %.1fs after %s", key, attempt, s.max_retries,
                        delay, why)
            if clock.wait(delay, stop):
                # stays acquired: the next run takes it up again
                return result("acquired", "interrupted", why)
