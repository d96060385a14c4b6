"""The record: one mail as one JSON-ready dict, versioned and described by a shipped schema.

``record.schema.json`` beside this module is the contract (docs/record-schema.md explains
each field). Bump :data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postline.source.headers import addresses, decode_words, parse_date, received_date
from postline.source.limits import MAX_HEADER_VALUE
from postline.source.mime import ParsedMail

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("record.schema.json")

_ADDRESS_HEADERS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc",
                    "reply_to": "reply-to", "sender": "sender"}
_HEADER_NAMES = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "reply-to": "Reply-To",
                 "sender": "Sender"}


@dataclass(frozen=True)
class MailPlace:
    """Where a mail came from: what the ledger key is made of."""

    connection: str
    folder: str
    folder_version: str
    server_id: str
    received: str | None = None      # the server's INTERNALDATE, ISO-8601 UTC, if known

    @property
    def key(self) -> str:
        """The ledger key: connection + folder + UIDVALIDITY + UID (or UIDL)."""
        return ledger_key(self.connection, self.folder, self.folder_version, self.server_id)


def ledger_key(connection: str, folder: str, folder_version: str, server_id: str) -> str:
    """``connection/folder/version/id``; unambiguous because each part is length-safe
    (the folder may contain ``/``, so the id and version are read from the right)."""
    return f"{connection}/{folder}/{folder_version}/{server_id}"


NAME_BYTES = 200   # of an attachment's file name part: file systems allow 255 a name


def safe_name(text: str, limit: int = 120, max_bytes: int = NAME_BYTES) -> str:
    """``text`` as a file-name part: no path separators or control characters, at most
    ``limit`` characters and ``max_bytes`` bytes of UTF-8 (a CJK letter takes 3 bytes, and
    file systems count bytes), cut before a short extension so that it stays (the full
    name stays in the record)."""
    text = text.encode("utf-8", "replace").decode("utf-8")   # (lone surrogates)
    cleaned = re.sub(r'[\x00-\x1f\x7f/\\:*?"<>|]+', "_", text).strip(" .")
    if len(cleaned) > limit or len(cleaned.encode("utf-8")) > max_bytes:
        stem, dot, ext = cleaned.rpartition(".")
        if not (dot and stem and 0 < len(ext) <= 16 and ext.isalnum()):
            stem, ext = cleaned, ""
        else:
            ext = "." + ext
        room = max_bytes - len(ext.encode("utf-8"))
        stem = stem[:limit - len(ext)].encode("utf-8")[:room].decode("utf-8", "ignore")
        cleaned = stem.rstrip(" .") + ext
    return cleaned or "_"


def file_key(key: str) -> str:
    """A ledger key as a unique, portable file-name stem (readable part + short hash)."""
    import hashlib

    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[-80:]
    return f"{readable}-{digest}"


def header_summary(mail: ParsedMail) -> dict[str, Any]:
    """Subject, addresses and Message-ID: all the filters, the duplicate check and the
    stream name need (cheap). Problems go to ``mail.defects``; raises nothing on its own
    (the runner still guards it: a bug here must cost one mail, not the batch)."""
    d = mail.defects
    subject_raw = mail.header("subject")
    subject = decode_words(subject_raw, d) if subject_raw else ""
    if "\x00" in subject:
        # a NUL ends the string in many consumers (C libraries, some databases)
        d.append("NUL characters in Subject; removed")
        subject = subject.replace("\x00", "")
    out: dict[str, Any] = {"subject": subject}
    for field, header in _ADDRESS_HEADERS.items():
        out[field] = addresses(mail.header_all(header), d, _HEADER_NAMES[header])
    out["message_id"] = message_id(mail.header_all("message-id"), d)
    return out


_COMMENT = re.compile(r"\([^()]*\)")
_ANGLE_ID = re.compile(r"<([^<>]*)>")


def message_id(values: list[str], defects: list[str]) -> str | None:
    """The Message-ID of a mail from the values of its Message-ID headers, normalised to
    the first ``<...>`` token without comments and white space; None when there is none
    or it is empty (``<>``). It is the mail's identity for the duplicate check, so a value
    as written would make ``<a@b> (comment)`` and ``<a@b>`` two mails, and every ``<>``
    mail after the first a duplicate. What was odd goes to ``defects``."""
    if not values:
        return None
    if len(values) > 1:
        defects.append(f"{len(values)} Message-ID headers; the first is used")
    raw = values[0]
    if raw[:1] == "<" and raw[-1:] == ">" and raw.count("<") == 1 and len(raw) > 2 and not (
            "(" in raw or " " in raw or "\t" in raw):
        return raw                      # the common case, already in normal form
    text = raw
    while "(" in text:                  # comments nest: drop the innermost ones first
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    m = _ANGLE_ID.search(text)
    if m is not None:
        inner = "".join(m.group(1).split())
        if inner:
            return f"<{inner}>"
    elif text.split():
        defects.append("Message-ID is not in angle brackets; used as written")
        return text.split()[0]
    defects.append(f"Message-ID {raw[:80]!r} has no id; the content hash is the identity")
    return None


def build_record(mail: ParsedMail, *, place: MailPlace, source: str, stream_name: str,
                 size: int, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of ``mail`` (attachment ``path`` and ``eml_path`` are filled in later by
    the runner, once it knows where they are kept). Returns a JSON-ready dict."""
    d = mail.defects
    s = summary or header_summary(mail)
    date = parse_date(mail.header("date"), d)
    received = place.received or received_date(mail.header_all("received"))
    record: dict[str, Any] = {
        "key": place.key,
        "schema_version": SCHEMA_VERSION,
        "message_id": s["message_id"],
        "source": source,
        "connection": place.connection,
        "folder": place.folder,
        "folder_version": place.folder_version,
        "server_id": place.server_id,
        "stream_name": stream_name,
        "subject": s["subject"],
        **{f: s[f] for f in _ADDRESS_HEADERS},
        "date": date,
        "received": received,
        "headers": _decoded_headers(mail, s, d),
        "text": _body(mail.texts),
        "html": _body(mail.htmls),
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type,
             "disposition": a.disposition, "content_id": a.content_id, "size": a.size,
             "sha256": a.sha256, "stored": a.temp_path is not None, "path": None,
             "skipped_reason": a.skipped_reason}
            for a in mail.attachments],
        "eml_path": None,
        "size": size,
        "parser": mail.parser,
        "defects": list(dict.fromkeys(d)),
    }
    return record


def _body(parts: list[str]) -> str | None:
    # (NUL characters in a body were reported by body_text, where they are cheaper to find)
    return "\n".join(parts) if parts else None


def _decoded_headers(mail: ParsedMail, summary: dict[str, Any], defects: list[str]
                     ) -> list[dict[str, str]]:
    # Values are unfolded and stripped by the parsers already: only encoded words need
    # work, and the subject's was decoded for the summary.
    done: dict[str, str] = {}
    subject_raw = mail.header("subject")
    if subject_raw is not None:
        done[subject_raw] = summary["subject"]
    out = []
    for n, v in mail.headers:
        if len(v) > MAX_HEADER_VALUE:
            defects.append(f"header {n[:40]} of {len(v):,} characters cut to "
                           f"{MAX_HEADER_VALUE:,} in the record")
            v = v[:MAX_HEADER_VALUE]
        if "=?" in v:
            value = done.get(v)
            if value is None:
                value = done[v] = decode_words(v, defects)
            out.append({"name": n, "value": value})
        else:
            out.append({"name": n, "value": v})
    return out


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The record's JSON schema (draft 2020-12), as shipped in the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_record(record: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``record`` does not follow the schema."""
    import jsonschema

    jsonschema.Draft202012Validator(schema()).validate(record)
