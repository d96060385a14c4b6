"""SMTP reply codes by name (RFC 5321 section 4.2.3, RFC 4954, RFC 3207), in the manner of
aiosmtplib's ``SMTPStatus``: a typo in a name fails the type checker, a typo in a number
does not. The reply classes go by the first digit: 2 done, 3 go on, 4 try later, 5 never."""

from __future__ import annotations

import enum


class SMTPStatus(enum.IntEnum):
    """The SMTP reply codes postline names; compares equal to the plain number."""

    READY = 220
    CLOSING = 221
    AUTH_SUCCESSFUL = 235
    COMPLETED = 250
    AUTH_CONTINUE = 334
    START_INPUT = 354
    DOMAIN_UNAVAILABLE = 421      # the server closes the session
    TLS_NOT_AVAILABLE = 454
    AUTH_FAILED = 535
    STORAGE_EXCEEDED = 552
    MAILBOX_NAME_INVALID = 553

    @staticmethod
    def positive(code: int) -> bool:
        """Whether ``code`` says done (2xx)."""
        return code // 100 == 2

    @staticmethod
    def transient(code: int) -> bool:
        """Whether ``code`` says try again later (4xx)."""
        return code // 100 == 4
