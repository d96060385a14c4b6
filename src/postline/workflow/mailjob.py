"""Processing one fetched mail: parse -> filter -> duplicate check -> record -> processor ->
every sink. Returns what the ledger should say; it never moves anything on the server.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from postline.errors import ParseError, PostlineError, StorageError, storage_error
from postline.protocols.base import RawMessage
from postline.source.filters import AttachmentRules, MailFilter
from postline.source.headers import iso_utc
from postline.source.ledger import Ledger, Outcome
from postline.source.parse import parse_mail
from postline.source.record import MailPlace, build_record, file_key, header_summary, safe_name
from postline.source.schedule import Clock, retry_delay
from postline.workflow.processor import Context, Processor, apply
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


@dataclass
class JobResult:
    outcome: Outcome
    label: str            # done | failed | ignored | duplicate | interrupted
    subject: str
    ms: float


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


def _utc(text: str | None) -> str | None:
    if not text:
        return None
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


def _duplicate(s: MailSettings, ledger: Ledger, key: str, identity: str, digest: str | None,
               folder_version: str) -> str | None:
    """The key of a done entry this mail repeats, when the reprocess mode says skip it."""
    dup = ledger.find_done(s.source, identity)
    if dup is None or dup.key == key:
        return None
    if dup.folder_version != folder_version:
        return dup.key  # re-read after a UIDVALIDITY change: already done, skip
    if s.reprocess == "manual":
        return dup.key
    if s.reprocess == "reprocess_on_change" and dup.content_hash == digest:
        return dup.key
    return None


def _store_attachments(record: dict[str, Any], parsed, home: Path) -> None:
    for i, (att, rec) in enumerate(zip(parsed.attachments, record["attachments"])):
        if att.temp_path is None:
            continue
        home.mkdir(parents=True, exist_ok=True)
        target = home / f"{i:02d}-{safe_name(att.filename or 'attachment')}"
        try:
            os.replace(att.temp_path, target)
        except OSError:  # another file system
            shutil.move(str(att.temp_path), target)
        rec["path"] = str(target)


def process(raw: RawMessage, *, s: MailSettings, ledger: Ledger, stop: threading.Event,
            clock: Clock) -> JobResult:
    """Turn ``raw`` into a record and hand it to every sink. Never raises for a mail's own
    problems (they become a ``failed`` outcome); lets ConnectError, StorageError (disk full,
    permissions: not the mail's fault) and stop requests out."""
    t0 = time.perf_counter()
    place = place_of(raw, s.connection)
    key = place.key
    # The content hash costs a pass over the raw mail: taken only where it is used (the
    # identity of a mail without Message-ID, and reprocess_on_change).
    digest = content_hash(raw) if s.reprocess == "reprocess_on_change" else None
    # Scratch files of the parser; only made for stored attachments, and the whole work
    # dir is emptied when the runner starts, so there is nothing to clean before.
    work = s.work_dir / file_key(key)

    def result(state: str, label: str, subject: str, reason: str | None = None,
               identity: str | None = None, dup_of: str | None = None) -> JobResult:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        out = Outcome(key=key, state=state, reason=reason, message_id=identity,
                      content_hash=digest, subject=subject[:300], dup_of=dup_of,
                      settled=label == "duplicate")
        return JobResult(outcome=out, label=label, subject=subject,
                         ms=(time.perf_counter() - t0) * 1000)

    try:
        parsed = parse_mail(data=raw.data, path=raw.path, policy=s.attachments, work_dir=work)
    except ParseError as exc:
        digest = digest or content_hash(raw)
        return result("failed", "failed", "", f"parse: {exc}", f"sha256:{digest}")
    summary = header_summary(parsed)
    subject = summary["subject"]
    if not summary["message_id"] and digest is None:
        digest = content_hash(raw)
    identity = summary["message_id"] or f"sha256:{digest}"
    reason = s.mail_filter.reason_to_ignore(senders=summary["from"], subject=subject)
    if reason:
        return result("ignored", "ignored", subject, reason, identity)
    dup = _duplicate(s, ledger, key, identity, digest, place.folder_version)
    if dup:
        return result("ignored", "duplicate", subject,
                      f"duplicate of {dup} (same Message-ID, already done); "
                      f"'postline ledger reset' that key to process it again", identity, dup)
    macros = {"folder": place.folder, "subject": subject, "key": key,
              "from": summary["from"][0]["address"] if summary["from"] else "",
              "received": place.received or "", "message_id": identity,
              "id": place.server_id}
    try:
        record = build_record(parsed, place=place, source=s.source,
                              stream_name="", size=raw.size, summary=summary)
        macros["date"] = record["date"] or ""
        macros["received"] = record["received"] or ""
        record["stream_name"] = s.stream_name(macros)
        _store_attachments(record, parsed, s.attachments_home(key))
        for sink in s.sinks:
            if isinstance(sink, DirectorySink) and sink.keep_eml:
                record["eml_path"] = str(sink.eml_path(key))
                break
    except StorageError:
        raise
    except PostlineError as exc:
        return result("failed", "failed", subject, f"record: {exc}", identity)
    except Exception as exc:  # noqa: BLE001 - a bad mail must not stop the source
        if (err := storage_error(exc, what="storing attachments")) is not None:
            raise err from exc
        return result("failed", "failed", subject, f"record: {type(exc).__name__}: {exc}",
                      identity)
    attempt = 0
    while True:
        where = "processor"
        try:
            rec = record
            if s.processor is not None:
                rec = copy.deepcopy(record) if s.on_failure == "retry" else record
                if s.context is not None:
                    s.context.key = key
                rec = apply(s.processor, rec, s.context)  # type: ignore[arg-type]
            for sink in s.sinks:
                where = f"{sink.label} sink"
                try:
                    sink.write(rec, raw)
                except OSError as exc:
                    if (err := storage_error(exc, what=f"writing {sink.where}")) is not None:
                        raise err from exc
                    raise
            return result("done", "done", subject, None, identity)
        except Exception as exc:  # noqa: BLE001 - the processor is user code
            if isinstance(exc, StorageError):
                # the disk, not the mail: stop the round; the mail stays acquired and in
                # the input folder, and the next run delivers it (sinks are idempotent)
                raise
            why = f"{where}: {type(exc).__name__}: {exc}"[:500]
            if s.on_failure != "retry" or attempt >= s.max_retries:
                return result("failed", "failed", subject, why, identity)
            attempt += 1
            delay = retry_delay(attempt, min_backoff=s.min_backoff, max_backoff=s.max_backoff)
            log.warning("key=%s retry %d/%d in %.1fs after %s", key, attempt, s.max_retries,
                        delay, why)
            if clock.wait(delay, stop):
                # stays acquired: the next run takes it up again
                return result("acquired", "interrupted", subject, why, identity)
