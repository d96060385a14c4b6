"""Email addresses of outgoing mail: parse, validate, and render for headers and envelope.

Pure functions; every error is a :class:`postline.errors.MessageError` naming the field.

Internationalised addresses: a non-ASCII domain is kept in Unicode here and encoded to
punycode (IDNA 2008, UTS 46 mapping) for the wire unless the mail goes out with SMTPUTF8.
A non-ASCII local part can only travel with SMTPUTF8; :func:`needs_smtputf8` tells.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import idna

from postline.errors import MessageError

# RFC 5322 atext plus "." (dot-atom); anything else in a local part would need quoting,
# which real mail systems handle so badly that refusing is kinder.
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\U0010ffff]+$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_ADDR = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<]*?))\s*<([^<>]*)>\s*')
_QUOTED_PAIR = re.compile(r"\\(.)")
_LIST_SPECIALS = frozenset(',;"<')


@dataclass(frozen=True)
class Address:
    """One mailbox: ``local@domain`` with an optional display name (domain in Unicode)."""

    local: str
    domain: str
    name: str = ""

    @property
    def addr(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def ascii_domain(self) -> str:
        """The domain as it travels without SMTPUTF8 (punycode labels)."""
        return to_ascii_domain(self.domain)

    def wire(self, *, smtputf8: bool) -> str:
        """The address for MAIL FROM / RCPT TO and headers."""
        if smtputf8:
            return self.addr
        return f"{self.local}@{self.ascii_domain}"

    def to_json(self) -> dict[str, Any]:
        return {"Address": self.addr, "PersonalName": self.name}


def needs_smtputf8(addresses: list[Address] | tuple[Address, ...]) -> bool:
    """True when some local part is non-ASCII (only SMTPUTF8 can carry it)."""
    return any(not a.local.isascii() for a in addresses)


def to_ascii_domain(domain: str) -> str:
    """``domain`` with IDNA labels in punycode; raises ValueError when it is not valid IDNA."""
    if domain.startswith("["):
        return domain
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii")


def check_header_text(value: str, field: str) -> None:
    """Raise MessageError naming ``field`` when ``value`` cannot be one header line.

    Refused: CR and LF (header injection); the other characters that end a line for a
    program on the way (VT, FF, the C0 separators FS/GS/RS, NEL U+0085, U+2028, U+2029: the
    stdlib's email package splits on them, which broke building the mail); every other C0
    control and DEL (a NUL is sent raw and Postfix cuts the header there). TAB is allowed.
    """
    m = _BAD_HEADER_CHAR.search(value)
    if m is None:
        return
    ch = m.group()
    if ch in "\r\n":
        raise MessageError(f"{field} contains a line break (CR/LF); header values must be one "
                           f"line, line breaks would inject headers", field=field)
    raise MessageError(f"{field} contains {_char_name(ch)} at position {m.start()}; header "
                       f"values may not hold line separators or control characters (TAB is "
                       f"allowed)", field=field)


def _char_name(ch: str) -> str:
    name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, "a control character")
    return f"U+{ord(ch):04X} ({name})"


_BAD_HEADER_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_CONTROL_NAMES = {"\x00": "NUL", "\x0b": "vertical tab", "\x0c": "form feed",
                  "\x1c": "file separator", "\x1d": "group separator",
                  "\x1e": "record separator", "\x1f": "unit separator", "\x7f": "DEL",
                  "\x85": "next line, NEL"}


def parse_address(text: str, field: str, *, name: str = "") -> Address:
    """Parse ``addr``, ``Name <addr>`` or ``<addr>`` into an :class:`Address`.

    Raises MessageError naming ``field`` when it is empty, has a line break, or is not a
    valid address.
    """
    if not isinstance(text, str):
        raise MessageError(f"{field} must be a string, got {type(text).__name__}", field=field)
    check_header_text(text, field)
    check_header_text(name, field)
    raw = text.strip()
    m = _NAME_ADDR.fullmatch(raw) if "<" in raw else None
    if m:
        shown = m.group(1) if m.group(1) is not None else (m.group(2) or "")
        shown = _QUOTED_PAIR.sub(r"\1", shown).strip()
        name = name or shown
        raw = m.group(3).strip()
    if name and _CTL.search(name):
        raise MessageError(f"{field}: the display name contains control characters", field=field)
    return Address(*_split_addr(raw, field), name=name.strip())


def _split_addr(raw: str, field: str) -> tuple[str, str]:
    if not raw:
        raise MessageError(f"{field} is empty; give an address like someone@example.com",
                           field=field)
    if raw.count("@") != 1:
        raise MessageError(f"{field}: {raw!r} is not an email address (expected local@domain)",
                           field=field)
    local, domain = raw.split("@")
    if not local or not _ATEXT.match(local) or local.startswith(".") or local.endswith(".") \
            or ".." in local:
        raise MessageError(f"{field}: {raw!r} has an invalid local part {local!r}", field=field)
    if len(local.encode()) > 64:
        raise MessageError(f"{field}: the local part of {raw!r} is longer than 64 octets",
                           field=field)
    return local, _check_domain(domain, raw, field)


def _check_domain(domain: str, raw: str, field: str) -> str:
    if domain.startswith("[") and domain.endswith("]"):
        return domain
    domain = domain.rstrip(".") if domain.endswith(".") else domain
    known = _valid_domains.get(domain)
    if known is not None:
        return known
    try:
        ascii_domain = to_ascii_domain(domain)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise MessageError(f"{field}: {raw!r} has an invalid domain {domain!r} ({exc})",
                           field=field) from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LABEL.match(lb) for lb in labels):
        raise MessageError(f"{field}: {raw!r} has an invalid domain {domain!r}", field=field)
    out = domain if not domain.isascii() else domain.lower()
    if len(_valid_domains) >= 4096:   # a pipeline mails few domains; bound it all the same
        _valid_domains.clear()
    _valid_domains[domain] = out
    return out


# domain as written -> validated form (IDNA checks cost more than the rest of a message)
_valid_domains: dict[str, str] = {}


def split_address_list(text: str, field: str) -> list[str]:
    """Split ``"a@x, B <b@y>; c@z"`` on commas and semicolons outside quotes and ``<...>``.

    Raises MessageError when ``text`` holds a line break or a control character.
    """
    check_header_text(text, field)
    if _LIST_SPECIALS.isdisjoint(text):
        one = text.strip()
        return [one] if one else []
    parts: list[str] = []
    buf: list[str] = []
    quoted, angle = False, False
    prev = ""
    for ch in text:
        if ch == '"' and prev != "\\":
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle = True
        elif ch == ">" and not quoted:
            angle = False
        if ch in ",;" and not quoted and not angle:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        prev = ch
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]
