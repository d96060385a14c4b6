"""The servers' capability words postline acts on or shows, by protocol, as names.

``enum.StrEnum``: each member is the word itself (``ImapCapability.MOVE == "MOVE"``), so
the server's lists are searched and shown unchanged, while a typo in a name fails the type
checker instead of silently never matching.
"""

from __future__ import annotations

import enum


class ImapCapability(enum.StrEnum):
    """IMAP CAPABILITY words (RFC 9051 and extensions)."""

    STARTTLS = "STARTTLS"
    IDLE = "IDLE"                   # RFC 2177: push of new mail
    MOVE = "MOVE"                   # RFC 6851: server-side move
    UIDPLUS = "UIDPLUS"             # RFC 4315: UID EXPUNGE of only our own mails
    SPECIAL_USE = "SPECIAL-USE"
    LITERAL_PLUS = "LITERAL+"


class Pop3Capability(enum.StrEnum):
    """POP3 CAPA words (RFC 2449)."""

    STLS = "STLS"
    UIDL = "UIDL"
    TOP = "TOP"
    PIPELINING = "PIPELINING"
    SASL = "SASL"


class SmtpExtension(enum.StrEnum):
    """SMTP EHLO keywords (RFC 5321 and the extensions named)."""

    STARTTLS = "STARTTLS"           # RFC 3207
    AUTH = "AUTH"                   # RFC 4954
    PIPELINING = "PIPELINING"       # RFC 2920
    SIZE = "SIZE"                   # RFC 1870
    SMTPUTF8 = "SMTPUTF8"           # RFC 6531
    EIGHTBITMIME = "8BITMIME"       # RFC 6152
    CHUNKING = "CHUNKING"           # RFC 3030
