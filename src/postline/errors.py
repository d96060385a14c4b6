"""postline's errors, grouped by what the runtime should do with them.

Every error postline raises derives from :class:`PostlineError`. Third-party exceptions
(imaplib, poplib, asyncio streams, MSAL, httpx, ssl, socket) are translated at the boundary of the
adapter that called the library, with ``raise ... from exc`` so the cause is kept.

::

    PostlineError                       str(err) is one line a user can act on
    ├── ConfigError                     the project is wrong: fix the YAML, then rerun (fatal)
    │   ├── ValidationFailed            carries every Problem found in one run
    │   └── SecretError                 a secret cannot be read or decrypted (names the secret)
    ├── ConnectError                    could not reach or talk to a server
    │   ├── TLSError                    handshake failed, certificate untrusted, name mismatch
    │   ├── StartTLSUnavailable         security: starttls, but the server does not offer it
    │   └── ProtocolError               the server said something we cannot work with
    ├── AuthError                       the server or the authority refused the credentials (fatal)
    │   ├── InsecureAuthRefused         credentials would cross an unencrypted link
    │   └── TokenError                  OAuth token could not be obtained or was rejected
    │       └── LoginRequired           device flow: run ``postline login`` again
    ├── DeliveryError                   a mail was not accepted (``retriable`` says if trying again helps)
    ├── MessageError                    an EmailMessage is invalid (names the field); skippable
    ├── QueueFull                       SendAndForget: the bounded queue has no room; retriable
    ├── ParseError                      a mail could not be turned into a record; skippable
    ├── StorageError                    a local write/read failed (disk full, permissions):
    │                                   not the mail's fault, so stop and retry later
    ├── UnsafePathError                 an output entry is a link (or not what postline
    │                                   writes): refused, never followed; the mail fails
    └── Busy                            another process already does this (reads this source,
                                        uses this state): do not start a second one (fatal)

:func:`os_error_message` words an ``OSError`` (ENOSPC, EACCES, ENOENT, ...) as one line
with its path and the likely fix; ``StorageError.from_os_error`` wraps it.

Each class has a ``disposition``: ``"fatal"`` (stop and tell the user), ``"retriable"``
(back off and try again), or ``"skippable"`` (this item fails, the rest goes on).
Instances may override it (a 4xx DeliveryError is retriable, a 5xx is not).
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Literal

Disposition = Literal["fatal", "retriable", "skippable"]


class PostlineError(Exception):
    """Root of postline's errors. ``str(err)`` is a single line meant for the user."""

    disposition: Disposition = "fatal"

    def __init__(self, message: str, *, hint: str | None = None,
                 disposition: Disposition | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if disposition is not None:
            self.disposition = disposition

    @property
    def retriable(self) -> bool:
        return self.disposition == "retriable"

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(PostlineError):
    """The project configuration is invalid or incomplete."""


class ValidationFailed(ConfigError):
    """A project failed validation; ``problems`` holds every problem found."""

    def __init__(self, problems: list, message: str | None = None) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if getattr(p, "severity", "error") == "error"]
        super().__init__(message or f"project has {len(errors)} error(s)")


class SecretError(ConfigError):
    """A secret value cannot be resolved or decrypted."""


class ConnectError(PostlineError, ConnectionError):
    """Could not connect to, or keep talking to, a server. Usually worth retrying later."""

    disposition: Disposition = "retriable"


class TLSError(ConnectError):
    """TLS failed: wrong port kind, untrusted certificate, host name mismatch, old protocol."""

    disposition: Disposition = "fatal"


class StartTLSUnavailable(ConnectError):
    """``security: starttls`` was configured but the server does not offer STARTTLS."""

    disposition: Disposition = "fatal"


class ProtocolError(ConnectError):
    """The server answered something the protocol does not allow here."""


class ConnectTimeout(ConnectError, TimeoutError):
    """Connecting or reading timed out."""


class AuthError(PostlineError):
    """The server or the authority refused the credentials."""


class InsecureAuthRefused(AuthError):
    """Credentials would be sent over an unencrypted connection to a non-loopback host."""


class TokenError(AuthError):
    """An OAuth token could not be obtained, refreshed, or was rejected."""


class LoginRequired(TokenError):
    """Device flow has no usable refresh token: the user must run ``postline login``."""


class DeliveryOutcome(enum.StrEnum):
    """What a failed delivery means for the mail (stored as the plain word)."""

    REJECTED = "rejected"       # the server refused it: sending again will not help
    TRANSIENT = "transient"     # not now: a retry may help
    UNKNOWN = "unknown"         # e.g. connection lost after the final dot of DATA: maybe sent


class DeliveryError(PostlineError):
    """A mail was not accepted by the server. ``retriable`` tells whether a retry may help.

    ``outcome`` defaults from ``retriable``; ``says_not_retried``: the message already tells
    the user that the mail is not sent again (so the service does not add it twice).
    """

    def __init__(self, message: str, *, code: int | None = None, retriable: bool = False,
                 hint: str | None = None, outcome: DeliveryOutcome | str | None = None,
                 says_not_retried: bool = False) -> None:
        super().__init__(message, hint=hint,
                         disposition="retriable" if retriable else "fatal")
        self.code = code
        self.outcome = DeliveryOutcome(outcome) if outcome else (
            DeliveryOutcome.TRANSIENT if retriable else DeliveryOutcome.REJECTED)
        self.says_not_retried = says_not_retried


class MessageError(PostlineError, ValueError):
    """An EmailMessage is invalid; ``field`` names the offending key."""

    disposition: Disposition = "skippable"

    def __init__(self, message: str, *, field: str | None = None,
                 problems: tuple[MessageError, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        # every problem found when there are several (``message`` then sums them up)
        self.problems = problems


class QueueFull(PostlineError):
    """SendAndForget could not enqueue: the send queue is at its configured size."""

    disposition: Disposition = "retriable"


class ParseError(PostlineError):
    """A mail could not be turned into a record at all."""

    disposition: Disposition = "skippable"


class UnsafePathError(PostlineError):
    """A sink's directory holds a symbolic link (or another odd entry) where postline writes
    a file or directory of a mail: it is refused, not followed, and only that mail fails."""

    disposition: Disposition = "skippable"


class Busy(PostlineError):
    """Another process holds the lock for this work (e.g. already reads this Email Source
    with the same state directory); starting a second one would deliver mails twice."""


class StorageError(PostlineError):
    """A local file operation failed for a reason outside the mail (disk full, quota,
    permissions, read-only file system). Retriable: the same write may work once the
    operator fixed the disk, so a mail must stay where it is (not done, not moved)."""

    disposition: Disposition = "retriable"

    @classmethod
    def from_os_error(cls, exc: OSError, *, what: str | None = None) -> StorageError:
        """A StorageError whose message is :func:`os_error_message` of ``exc``."""
        err = cls(os_error_message(exc, what=what))
        err.errno = exc.errno  # type: ignore[attr-defined]
        return err


# Errors of the machine, not of a mail: a write that fails with one of these must stop the
# round and leave the mail where it is, never mark it failed.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO,
                            errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE})


def storage_error(exc: BaseException, *, what: str | None = None) -> StorageError | None:
    """The StorageError for ``exc`` when it (or its cause) is a disk/permission problem of
    this machine (:data:`STORAGE_ERRNOS`), else None."""
    seen = exc
    while seen is not None:
        if isinstance(seen, StorageError):
            return seen
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return StorageError.from_os_error(seen, what=what)
        seen = seen.__cause__ or seen.__context__
    return None


# errno -> (plain words, likely fix). Words instead of strerror so messages read the same
# everywhere; the errno name is kept so people can search for it.
_OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free some disk space, then run again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota, then run again"),
    errno.EFBIG: ("file too large for this file system or process limit",
                  "check 'ulimit -f' and the file system, then run again"),
    errno.EACCES: ("permission denied", "check the owner and mode of that path (and of its "
                                        "directories) for the user running postline"),
    errno.EPERM: ("operation not permitted", "check the owner and mode of that path for the "
                                             "user running postline"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENOTDIR: ("a part of the path is not a directory", "check the path"),
    errno.EISDIR: ("is a directory, not a file", "give the path of a file"),
    errno.EROFS: ("read-only file system", "write somewhere writable, or remount read-write"),
    errno.EMFILE: ("too many open files", "raise the limit ('ulimit -n') or run fewer "
                                          "workflows in one process"),
    errno.ENFILE: ("too many open files in the system", "raise the system's file limit"),
    errno.EIO: ("input/output error", "the disk or file system is failing; check 'dmesg'"),
}


def os_error_message(exc: OSError, *, what: str | None = None) -> str:
    """One line for an OSError: what was done, the path(s), plain words, errno name, fix.

    ``what`` says what postline was doing (``"writing the jsonl sink"``); without it the
    line starts with the path. Never raises.
    """
    code = exc.errno
    words, fix = _OS_ERRORS.get(code or -1, (exc.strerror or str(exc) or type(exc).__name__,
                                            ""))
    name = errno.errorcode.get(code or -1)
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(paths)
    head = " ".join(part for part in (what, where) if part)
    text = f"{head}: {words}" if head else words
    if name:
        text += f" ({name})"
    return f"{text}; {fix}" if fix else text


class Ignore(Exception):
    """Raised by ``on_message`` to skip a mail on purpose: the ledger records it as
    ``ignored`` with ``reason``, nothing reaches the sinks, and the server does what the
    source says for ignored mails (``folders.ignore``, ``pop3.ignore``).

    Not a PostlineError: nothing went wrong. It lives here, not in the workflow package, so
    that ``import postline`` (which hands it out) loads no more than this module."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = str(reason).strip() or "ignored by the processor"
