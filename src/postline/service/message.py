"""Normalise the platform's EmailMessage shapes into one typed :class:`OutgoingMessage`.

Pure: no I/O except reading attachment files named by ``Path``. Keys are matched in any
case, and ``_``/``-`` are ignored (``ReplyTo``, ``reply_to`` and ``reply-to`` are one key).
A problem raises :class:`postline.errors.MessageError` whose ``field`` names the key as
the user wrote it (``To[1].Address``, ``Attachments[0].Content``, ...); when a message has
several, one MessageError sums them up and lists each in ``problems``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postline.errors import MessageError
from postline.service.addresses import (
    Address,
    check_header_text,
    parse_address,
    split_address_list,
)
from postline.service.html_text import html_to_text, looks_like_html

# canonical key -> how the docs spell it
KEYS = {
    "from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "tolist": "ToList",
    "cclist": "CcList", "bcclist": "BccList", "subject": "Subject", "body": "Body",
    "text": "Text", "html": "Html", "attachments": "Attachments", "replyto": "ReplyTo",
    "headers": "Headers", "priority": "Priority",
}
_ADDRESS_KEYS = {"address": "Address", "personalname": "PersonalName", "name": "Name"}
_ATTACHMENT_KEYS = {"filename": "FileName", "contenttype": "ContentType",
                    "content": "Content", "path": "Path"}
_PRIORITIES = {"high": ("1 (Highest)", "high"), "normal": None, "low": ("5 (Lowest)", "low")}
# Headers built from other keys (or by the MIME builder) may not be set through Headers.
_RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "reply-to", "date", "message-id",
                     "mime-version", "content-type", "content-transfer-encoding", "sender",
                     "x-priority", "importance"}
# Headers that are not the sender's to write: trace headers and Resent-* are added by the
# mail servers on the way, Content-* describe the MIME parts postline builds.
_SERVER_HEADERS = {"return-path", "received"}
_SERVER_PREFIXES = ("resent-", "content-")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+$")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingMessage:
    """A validated mail, ready for MIME building. ``html``/``text`` may each be empty."""

    sender: tuple[Address, ...]
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str = ""
    html: str = ""
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    priority: str = "normal"

    @property
    def recipients(self) -> tuple[Address, ...]:
        """Every envelope recipient (To, Cc and Bcc), duplicates removed, order kept."""
        seen: dict[str, Address] = {}
        for a in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(a.addr.lower(), a)
        return tuple(seen.values())


def canonical(key: str) -> str:
    """``key`` as compared when matching message fields: lower case, without ``_``, ``-``
    and white space (``Reply-To``, ``reply_to`` and ``replyTo`` are one field). Never raises."""
    c = _canonical.get(key)
    if c is None:
        c = _SEPARATORS.sub("", key).lower()
        if len(_canonical) < 1024:   # the keys users write are few; bounded all the same
            _canonical[key] = c
    return c


_SEPARATORS = re.compile(r"[_\-\s]")
_canonical: dict[str, str] = {}


def _fold_keys(data: dict[str, Any], known: dict[str, str], where: str,
               problems: list[MessageError] | None = None) -> dict[str, tuple[str, Any]]:
    """Map canonical key -> (key as written, value). Unknown or duplicate keys raise, or,
    with a ``problems`` list, are added to it and left out."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in data.items():
        try:
            if not isinstance(key, str):
                raise MessageError(f"{where}keys must be strings, got {key!r}",
                                   field=f"{where}{key}")
            c = canonical(key)
            if c not in known:
                guess = difflib.get_close_matches(c, known, n=1, cutoff=0.6)
                hint = f"; did you mean {known[guess[0]]}?" if guess else \
                    f"; known keys: {', '.join(sorted(set(known.values())))}"
                raise MessageError(f"unknown key {where}{key}{hint}", field=f"{where}{key}")
            if c in out:
                raise MessageError(f"{where}{out[c][0]} and {where}{key} are the same key; "
                                   "give it once", field=f"{where}{key}")
        except MessageError as exc:
            if problems is None:
                raise
            problems.append(exc)
            continue
        out[c] = (key, value)
    return out


class _Problems:
    """Collects the MessageErrors of independent parts of a message, so that one answer
    lists every problem (a user fixing them one per attempt would send many times)."""

    def __init__(self) -> None:
        self.found: list[MessageError] = []

    def attempt(self, fn: Callable[[], Any], default: Any) -> Any:
        """``fn()``, or ``default`` with its MessageError kept."""
        try:
            return fn()
        except MessageError as exc:
            self.found.append(exc)
            return default

    def failed(self, *fields: str) -> bool:
        """Whether a problem was found in one of ``fields`` (as written, case-insensitive)."""
        names = {canonical(f) for f in fields}
        return any(canonical(str(p.field or "").split("[")[0].split(".")[0].split(",")[0])
                   in names for p in self.found)

    def raise_any(self) -> None:
        """Raise the one problem found, or one MessageError listing all of them."""
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            raise MessageError(f"{len(self.found)} problems in the message: "
                               + "; ".join(p.message for p in self.found),
                               field=self.found[0].field, problems=tuple(self.found))


def refuse_file_paths(data: Any) -> None:
    """Raise MessageError if an attachment names a file by ``Path``.

    For messages from outside the host (the HTTP API): a Path would let any API caller mail
    themselves any file the postline process can read (its private key, for one). Such
    callers send the content as base64 instead. Malformed messages pass here and fail in
    :func:`normalise` with the usual field-named error.
    """
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if not isinstance(key, str) or canonical(key) != "attachments" or not isinstance(
                value, list):
            continue
        for i, item in enumerate(value):
            if isinstance(item, dict) and any(isinstance(k, str) and canonical(k) == "path"
                                              for k in item):
                raise MessageError(f"{key}[{i}].Path: file paths are not accepted over HTTP; "
                                   "send the file as base64 in Content",
                                   field=f"{key}[{i}].Path")


def normalise(data: Any, *, default_from: str | None = None) -> OutgoingMessage:
    """Validate an EmailMessage (a dict in any supported shape) into an OutgoingMessage.

    ``default_from`` is used when the message has no ``From``. Raises MessageError naming
    the offending field; with several problems, one MessageError whose ``problems`` holds
    each of them.
    """
    if not isinstance(data, dict):
        raise MessageError(f"an EmailMessage must be a JSON object, got {type(data).__name__}",
                           field="message")
    found = _Problems()
    keys = _fold_keys(data, KEYS, "", found.found)
    sender: tuple[Address, ...] = ()
    if "from" in keys:
        sender = found.attempt(lambda: _addresses(*keys["from"], allow_string=True), ())
    elif default_from:
        sender = found.attempt(lambda: (parse_address(default_from, "default_from"),), ())
    if not sender and not found.failed("From", "default_from"):
        found.found.append(MessageError("From is missing; give From as an address or "
                                        "{Address, PersonalName}", field="From"))
    to, cc, bcc = (found.attempt(functools.partial(_recipients, keys, kind), ())
                   for kind in ("to", "cc", "bcc"))
    if not (to or cc or bcc) and not found.failed("To", "Cc", "Bcc", "ToList", "CcList",
                                                  "BccList"):
        found.found.append(MessageError("no recipient: give at least one of To, Cc, Bcc (or "
                                        "ToList, CcList, BccList)", field="To"))
    reply_to = found.attempt(lambda: _addresses(*keys["replyto"], allow_string=True)
                             if "replyto" in keys else (), ())

    def subject_line() -> str:
        subject = _string(keys, "subject")
        check_header_text(subject, keys["subject"][0] if "subject" in keys else "Subject")
        return subject

    subject = found.attempt(subject_line, "")
    text, html = found.attempt(lambda: _bodies(keys), ("", ""))
    attachments = _attachments(keys, found)
    headers = found.attempt(lambda: _headers(keys), ())
    priority = found.attempt(lambda: _priority(keys), "normal")
    found.raise_any()
    return OutgoingMessage(
        sender=sender, to=to, cc=cc, bcc=bcc, reply_to=reply_to, subject=subject,
        text=text, html=html, attachments=attachments, headers=headers, priority=priority)


def _string(keys: dict[str, Any], name: str) -> str:
    if name not in keys or keys[name][1] is None:
        return ""
    written, value = keys[name]
    if not isinstance(value, str):
        raise MessageError(f"{written} must be a string, got {type(value).__name__}",
                           field=written)
    return value


def _recipients(keys: dict[str, Any], kind: str) -> tuple[Address, ...]:
    lst = kind + "list"
    if kind in keys and lst in keys:
        a, b = keys[kind][0], keys[lst][0]
        raise MessageError(f"both {a} and {b} are given; use one of them (a list of "
                           f"{{Address, PersonalName}} or a comma separated string)",
                           field=f"{a},{b}")
    if lst in keys:
        written, value = keys[lst]
        if value is None:
            return ()
        if not isinstance(value, str):
            raise MessageError(f"{written} must be a comma or semicolon separated string",
                               field=written)
        return tuple(parse_address(p, f"{written}[{i}]")
                     for i, p in enumerate(split_address_list(value, written)))
    if kind in keys:
        return _addresses(*keys[kind], allow_string=False)
    return ()


def _addresses(written: str, value: Any, *, allow_string: bool) -> tuple[Address, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        if allow_string:
            return tuple(parse_address(p, f"{written}[{i}]" if i else written)
                         for i, p in enumerate(split_address_list(value, written)))
        raise MessageError(f"{written} must be a list of {{Address, PersonalName}}; for a "
                           f"comma separated string use {written}List", field=written)
    if isinstance(value, dict):
        return (_address_object(value, written),)
    if isinstance(value, list):
        return tuple(_address_item(v, f"{written}[{i}]") for i, v in enumerate(value))
    raise MessageError(f"{written} must be a list of {{Address, PersonalName}}", field=written)


def _address_item(value: Any, where: str) -> Address:
    if isinstance(value, str):
        return parse_address(value, where)
    if isinstance(value, dict):
        return _address_object(value, where)
    raise MessageError(f"{where} must be {{Address, PersonalName}} or a string", field=where)


def _address_object(value: dict[str, Any], where: str) -> Address:
    keys = _fold_keys(value, _ADDRESS_KEYS, f"{where}.")
    if "address" not in keys:
        raise MessageError(f"{where}.Address is missing", field=f"{where}.Address")
    name_key = "personalname" if "personalname" in keys else "name"
    name = keys.get(name_key, ("PersonalName", ""))[1] or ""
    if not isinstance(name, str):
        raise MessageError(f"{where}.PersonalName must be a string", field=f"{where}.PersonalName")
    written, addr = keys["address"]
    return parse_address(addr, f"{where}.{written}", name=name) if name else \
        parse_address(addr, f"{where}.{written}")


def _bodies(keys: dict[str, Any]) -> tuple[str, str]:
    """(text, html) from Body, legacy Text, and explicit Html/Text."""
    body, text, html = (_string(keys, k) for k in ("body", "text", "html"))
    if html:
        if body and text:
            raise MessageError(f"{keys['body'][0]}, {keys['text'][0]} and {keys['html'][0]} are "
                               f"all given; with Html, give Text (or Body) for the plain part",
                               field=f"{keys['body'][0]},{keys['text'][0]}")
        plain = text or body
        if plain and looks_like_html(plain):
            raise MessageError("with Html given, Body/Text must be plain text", field="Body")
        return plain or html_to_text(html), html
    if body and text:
        if looks_like_html(body) and not looks_like_html(text):
            return text, body
        raise MessageError(f"both {keys['body'][0]} and {keys['text'][0]} are given; Text is the "
                           f"legacy name of Body: give one, or Html and Text for two parts",
                           field=f"{keys['body'][0]},{keys['text'][0]}")
    content = body or text
    if content and looks_like_html(content):
        return html_to_text(content), content
    return content, ""


def _attachments(keys: dict[str, Any], found: _Problems) -> tuple[Attachment, ...]:
    if "attachments" not in keys or keys["attachments"][1] is None:
        return ()
    written, value = keys["attachments"]
    if not isinstance(value, list):
        found.found.append(MessageError(f"{written} must be a list of {{FileName, "
                                        "ContentType, Content|Path}", field=written))
        return ()
    done = (found.attempt(functools.partial(_attachment, item, f"{written}[{i}]"), None)
            for i, item in enumerate(value))
    return tuple(a for a in done if a is not None)


def _attachment(item: Any, where: str) -> Attachment:
    if not isinstance(item, dict):
        raise MessageError(f"{where} must be an object {{FileName, ContentType, Content|Path}}",
                           field=where)
    keys = _fold_keys(item, _ATTACHMENT_KEYS, f"{where}.")
    if ("content" in keys) == ("path" in keys):
        raise MessageError(f"{where} needs exactly one of Content (base64) and Path",
                           field=f"{where}.Content")
    if "path" in keys:
        written, path = keys["path"]
        p = Path(str(path)).expanduser()
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise MessageError(f"{where}.{written}: cannot read {p}: {exc.strerror}",
                               field=f"{where}.{written}") from None
        default_name = p.name
    else:
        written, content = keys["content"]
        try:
            data = base64.b64decode(content if isinstance(content, (str, bytes)) else b"?",
                                    validate=True)
        except (binascii.Error, ValueError):
            raise MessageError(f"{where}.{written} is not valid base64", field=f"{where}.{written}"
                               ) from None
        default_name = ""
    filename = keys.get("filename", ("FileName", default_name))[1] or default_name
    if not filename or not isinstance(filename, str):
        raise MessageError(f"{where}.FileName is missing", field=f"{where}.FileName")
    check_header_text(filename, f"{where}.FileName")
    ctype = keys.get("contenttype", ("", None))[1] or \
        mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if not isinstance(ctype, str) or not _CONTENT_TYPE.match(ctype):
        raise MessageError(f"{where}.ContentType {ctype!r} is not a MIME type like "
                           f"application/pdf", field=f"{where}.ContentType")
    return Attachment(filename=filename, content_type=ctype.lower(), data=data)


def _headers(keys: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    if "headers" not in keys or keys["headers"][1] is None:
        return ()
    written, value = keys["headers"]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        pairs = []
        for i, item in enumerate(value):
            hk = _fold_keys(item, {"name": "Name", "value": "Value"}, f"{written}[{i}].")
            pairs.append((hk.get("name", ("", ""))[1], hk.get("value", ("", ""))[1]))
    else:
        raise MessageError(f"{written} must be an object of header name to value",
                           field=written)
    out = []
    for name, val in pairs:
        where = f"{written}.{name}"
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise MessageError(f"{where}: {name!r} is not a valid header name", field=where)
        lower = name.lower()
        if lower in _RESERVED_HEADERS and not lower.startswith("content-"):
            raise MessageError(f"{where}: the {name} header is set by postline; use the "
                               f"message key of that name instead", field=where)
        if lower in _SERVER_HEADERS or lower.startswith(_SERVER_PREFIXES):
            raise MessageError(f"{where}: Headers may not set {name}: Return-Path, Received "
                               f"and Resent-* are added by mail servers, and Content-* by "
                               f"postline from Body and Attachments", field=where)
        if not isinstance(val, str):
            raise MessageError(f"{where} must be a string", field=where)
        check_header_text(val, where)
        out.append((name, val))
    return tuple(out)


def _priority(keys: dict[str, Any]) -> str:
    value = _string(keys, "priority").strip().lower() or "normal"
    if value not in _PRIORITIES:
        raise MessageError(f"Priority must be high, normal or low, got {value!r}",
                           field=keys["priority"][0])
    return value


def priority_headers(priority: str) -> list[tuple[str, str]]:
    """The X-Priority and Importance headers for ``priority`` (none for normal)."""
    p = _PRIORITIES.get(priority)
    return [] if p is None else [("X-Priority", p[0]), ("Importance", p[1])]
