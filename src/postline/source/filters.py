r"""Pure decisions: which mails to ignore (From/Subject filters), which attachments to keep.

Filter semantics (docs/source.md, "Filters"), per header:

1. blacklist first: any pattern found -> ignore;
2. then the whitelist, if it has patterns: any pattern found -> process, none -> ignore;
3. no whitelist: process.

From and Subject combine with AND: a mail is processed only when both filters say
"process"; it is ignored as soon as one says "ignore" (the reason names which one).
Patterns are Python regular expressions, *searched* (not anchored), case-insensitive.
The From filter is tried on each From address twice, as the bare ``address`` and as
``Name <address>`` (so both ``@example\.com$`` and ``^Alice <`` work); it matches when any
of these matches.

Attachment rules: the MIME type (``type/subtype``, lower case) is matched *fully* against
each rule's regex, case-insensitive. Blacklist rows first: a matching row denies the
attachment (when the row has ``max_kb``: only attachments larger than that). Then, when
there are whitelist rows: the first matching row admits it (denied when larger than its
``max_kb``); no matching row denies it. Finally the total cap: an attachment that would
bring the mail's stored total above ``max_total_kb`` is not stored - the cap wins over
every whitelist row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PatternRules:
    blacklist: tuple[re.Pattern[str], ...] = ()
    whitelist: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def compile(cls, blacklist: list[str], whitelist: list[str]) -> PatternRules:
        return cls(tuple(re.compile(p, re.IGNORECASE) for p in blacklist),
                   tuple(re.compile(p, re.IGNORECASE) for p in whitelist))

    def reason_to_ignore(self, values: list[str], what: str) -> str | None:
        """None to process, else why the mail is ignored."""
        for pattern in self.blacklist:
            if any(pattern.search(v) for v in values):
                # the pattern as the user wrote it (a repr would double each backslash)
                return f"{what} matches blacklist pattern '{pattern.pattern}'"
        if self.whitelist:
            if any(p.search(v) for p in self.whitelist for v in values):
                return None
            return f"{what} matches no whitelist pattern"
        return None


@dataclass(frozen=True)
class MailFilter:
    from_rules: PatternRules = PatternRules()
    subject_rules: PatternRules = PatternRules()

    @classmethod
    def from_config(cls, filters) -> MailFilter:
        """From an EmailSource ``filters`` model."""
        return cls(PatternRules.compile(filters.from_.blacklist, filters.from_.whitelist),
                   PatternRules.compile(filters.subject.blacklist, filters.subject.whitelist))

    @property
    def active(self) -> bool:
        r = (self.from_rules, self.subject_rules)
        return any(x.blacklist or x.whitelist for x in r)

    def reason_to_ignore(self, *, senders: list[dict[str, str]], subject: str) -> str | None:
        """None when the mail is to be processed, else the reason it is ignored."""
        values = [v for a in senders for v in
                  (a.get("address", ""), f"{a.get('name', '')} <{a.get('address', '')}>")
                  ] or [""]
        return (self.from_rules.reason_to_ignore(values, "From")
                or self.subject_rules.reason_to_ignore([subject], "Subject"))


@dataclass(frozen=True)
class TypeRow:
    pattern: re.Pattern[str]
    max_bytes: int | None


@dataclass(frozen=True)
class AttachmentRules:
    """Implements :class:`postline.source.mime.AttachmentPolicy` for the parser."""

    load: bool = False
    max_total_bytes: int | None = None
    blacklist: tuple[TypeRow, ...] = ()
    whitelist: tuple[TypeRow, ...] = ()

    @classmethod
    def from_config(cls, cfg) -> AttachmentRules:
        """From an EmailSource ``attachments`` model."""
        def rows(items) -> tuple[TypeRow, ...]:
            return tuple(TypeRow(re.compile(r.type, re.IGNORECASE),
                                 None if r.max_kb is None else r.max_kb * 1024) for r in items)

        return cls(load=cfg.load,
                   max_total_bytes=None if cfg.max_total_kb is None else cfg.max_total_kb * 1024,
                   blacklist=rows(cfg.blacklist), whitelist=rows(cfg.whitelist))

    def type_reason(self, content_type: str) -> str | None:
        """Reason to skip by type alone (before the size is known), else None."""
        ct = content_type.lower()
        for row in self.blacklist:
            if row.max_bytes is None and row.pattern.fullmatch(ct):
                return f"type {ct} is blacklisted ({row.pattern.pattern!r})"
        if self.whitelist and not any(r.pattern.fullmatch(ct) for r in self.whitelist):
            return f"type {ct} matches no whitelist row"
        return None

    def size_reason(self, content_type: str, size: int, stored_total: int) -> str | None:
        """Reason to skip once the decoded size is known, else None. The total cap wins."""
        ct = content_type.lower()
        kb = _kb(size)
        for row in self.blacklist:
            if row.max_bytes is not None and row.pattern.fullmatch(ct) and size > row.max_bytes:
                return (f"{kb} KB is over the blacklist limit of {_kb(row.max_bytes)} KB "
                        f"for {row.pattern.pattern!r}")
        for row in self.whitelist:
            if row.pattern.fullmatch(ct):
                if row.max_bytes is not None and size > row.max_bytes:
                    return (f"{kb} KB is over the whitelist limit of {_kb(row.max_bytes)} KB "
                            f"for {row.pattern.pattern!r}")
                break
        if self.max_total_bytes is not None and stored_total + size > self.max_total_bytes:
            return (f"total cap of {_kb(self.max_total_bytes)} KB per mail reached "
                    f"({kb} KB more would exceed it)")
        return None


def _kb(size: int) -> int:
    return (size + 1023) // 1024
