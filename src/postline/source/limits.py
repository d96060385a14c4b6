"""Bounds on what one mail may make postline hold, whatever its shape.

Measured before these (issue 15): a 2.7 MB mail of 200,000 headers took 260 MB, a
13.9 MB one of a million headers 1.1 GB, 300,000 Cc addresses 340 MB, 50,000 parts 26 s
and 50,000 files, and a mail nested 1,000 deep failed with a RecursionError. Past each
bound the rest is left out and a defect in the record says what was cut
(docs/record-schema.md, "Mail made to be large").
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_DEPTH = 40             # multipart nesting the fast parser reads (then: the stdlib's)
MAX_STDLIB_DEPTH = 100     # nesting the stdlib fallback reads (its parser overflows at ~1,000)
MAX_PARTS = 1000           # MIME parts read per mail
MAX_STORED = 200           # attachment files stored per mail (a file each)
MAX_HEADERS = 1000         # headers kept per header block
MAX_MALFORMED = 10         # malformed header lines named per block (the rest are counted)
MAX_HEADER_VALUE = 64 * 1024    # characters of one header value in the record
MAX_ADDRESSES = 1000            # addresses per address field of the record
MAX_ADDRESS_TEXT = 128 * 1024   # characters of an address header read

# The headers the record and the parser read: kept past MAX_HEADERS when none of that name
# was kept yet, so that 200,000 filler lines cannot hide the Subject.
NEEDED_HEADERS = frozenset({
    b"subject", b"from", b"to", b"cc", b"bcc", b"reply-to", b"sender", b"date", b"message-id",
    b"received", b"mime-version", b"content-type", b"content-transfer-encoding",
    b"content-disposition", b"content-id"})


class HeaderCap:
    """Which headers of one block are kept: the first MAX_HEADERS, then only the first
    header of each NEEDED_HEADERS name that none of the kept ones has."""

    __slots__ = ("seen", "_names")

    def __init__(self) -> None:
        self.seen = 0
        self._names: set[bytes] | None = None

    def keep(self, name: bytes, kept: Sequence[tuple]) -> bool:
        """Whether the header ``name`` is kept, ``kept`` being those kept so far
        (``(name, ...)`` tuples, names as bytes or str)."""
        self.seen += 1
        if len(kept) < MAX_HEADERS:
            return True
        if self._names is None:   # (only for a block this long: no cost to others)
            self._names = {(h[0] if isinstance(h[0], bytes)
                            else h[0].encode("ascii", "replace")).lower() for h in kept}
        lower = name.lower()
        if lower not in NEEDED_HEADERS or lower in self._names:
            return False
        self._names.add(lower)
        return True

    def defect(self, kept: int) -> str | None:
        """The defect naming the cut, or None when every header was kept."""
        if self.seen <= kept:
            return None
        return (f"{self.seen:,} headers in one header block; the first {MAX_HEADERS:,} kept "
                "(and the first Subject, From, To, Cc, Date... after them)")


def first_addresses(values: list[str]) -> list[str]:
    """``values`` (of one address header) cut to MAX_ADDRESS_TEXT characters in all, the
    last one at a comma between addresses."""
    out: list[str] = []
    room = MAX_ADDRESS_TEXT
    for v in values:
        if len(v) <= room:
            out.append(v)
            room -= len(v)
            continue
        cut = v.rfind(",", 0, room)
        if cut > 0:
            out.append(v[:cut])
        break
    return out
