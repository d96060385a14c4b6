"""The two small interfaces everything above the adapters uses: read a mailbox, send mail.

IMAP, POP3 and Microsoft Graph readers implement :class:`MailboxReader`; SMTP and Graph
senders implement :class:`MailSender`. The source, the service, the CLI and the web layer
depend only on these types, never on imaplib, poplib, the SMTP session, MSAL or httpx.

Reading is synchronous (one worker thread per source keeps ordering and back-pressure
simple, and IMAPClient/poplib are synchronous). Sending is asynchronous (many SMTP
sessions and pipelining in one event loop is what makes bulk sending fast).

Message identity is protocol-neutral:

* IMAP: ``folder_version`` = UIDVALIDITY, ``id`` = UID (as a decimal string).
* POP3: one folder ``INBOX``, ``folder_version`` = "" , ``id`` = UIDL (or a content hash
  where the server lacks UIDL).
* Graph: ``folder_version`` = folder id, ``id`` = immutable message id.

A *cursor* is an opaque string a reader returns and is handed back on the next call
(IMAP: the highest UID the folder held, UIDNEXT - 1; Graph: the delta link; POP3: unused).
Readers that honour it say so with ``Capabilities.cursor``; the runner keeps it per folder in
the ledger and lists incrementally with it (see ``postline.workflow.rounds``). Readers never keep
state between runs on their own: durable state lives in the source's ledger.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class FolderInfo:
    name: str                      # full path, decoded to Unicode, delimiter as the server uses
    delimiter: str | None = None
    flags: tuple[str, ...] = ()    # e.g. ("\\HasNoChildren", "\\Sent")
    special_use: str | None = None  # "\\Sent", "\\Trash", ... where the server says so


@dataclass(frozen=True)
class FolderState:
    """What opening a folder tells: its identity version and how far it reaches."""

    name: str
    folder_version: str            # IMAP UIDVALIDITY; Graph folder id; "" for POP3
    next_id: str | None = None     # IMAP UIDNEXT, where known
    exists: int = 0                # number of messages


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message in a folder, as listed (before its content is fetched). Slotted: a full
    listing holds one per mail of the folder (~150 bytes each instead of ~500)."""

    folder: str
    folder_version: str
    id: str
    size: int | None = None        # octets, where the server tells (RFC822.SIZE, LIST, size)
    internal_date: str | None = None  # ISO-8601 UTC received time, where the server tells
    flags: tuple[str, ...] = ()


@dataclass
class RawMessage:
    """One fetched message. Small ones are held in ``data``; large ones spooled to ``path``.

    Exactly one of ``data`` and ``path`` is set. Use :meth:`open` to read either way, so a
    100 MB mail never needs to sit in memory more than once.
    """

    ref: MessageRef
    data: bytes | bytearray | None = None
    path: Path | None = None

    def open(self) -> BinaryIO:
        import io

        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size

    def discard(self) -> None:
        """Remove a spooled file (no-op for in-memory messages)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Capabilities:
    """What a reader can do; the source adapts to it instead of probing."""

    folders: bool = True           # POP3: False
    move: bool = False             # server-side MOVE (else copy + delete)
    idle: bool = False             # push notification of new mail
    flags: bool = True             # can set flags such as \\Seen
    cursor: bool = False           # list_messages(cursor=...) lists only what came since
    raw: tuple[str, ...] = ()      # the server's own capability words, for diagnostics
    # list_messages(cursor=...) returns what changed since the cursor (new *and* changed
    # mails, maybe twice), not only new ones: the caller keeps the cursor between rounds
    delta: bool = False
    stable_ids: bool = False       # a message keeps its id when moved (Graph immutable ids)


class MailboxReader(abc.ABC):
    """Read and manage one mailbox. Use as a context manager; methods raise postline errors.

    Every method may raise :class:`postline.errors.ConnectError` (retriable) when the
    connection is lost; the caller reconnects by opening a new reader.
    """

    capabilities: Capabilities

    def __enter__(self) -> MailboxReader:
        try:
            self.connect()
        except BaseException:
            # __exit__ does not run when __enter__ raises: a login that fails after the
            # socket opened would otherwise leave the connection to the garbage collector.
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def connect(self) -> None:
        """Connect, secure and authenticate. Raises ConnectError, TLSError, AuthError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Log out and close; never raises."""

    @abc.abstractmethod
    def list_folders(self) -> list[FolderInfo]:
        """All folders of the mailbox (POP3: just INBOX)."""

    @abc.abstractmethod
    def open_folder(self, folder: str, *, readonly: bool = False) -> FolderState:
        """Select ``folder`` for the following calls and return its state. With
        ``readonly`` listing and fetching change nothing on the server, not even what
        counts as read (IMAP: EXAMINE; POP3: TOP instead of RETR, which servers such as
        Dovecot mark read; Graph: its reads are GETs anyway)."""

    @abc.abstractmethod
    def list_messages(self, folder: str, *, cursor: str | None = None
                      ) -> tuple[list[MessageRef], str | None]:
        """Messages in ``folder`` newer than ``cursor`` (all when None), oldest first,
        and the cursor to pass next time."""

    @abc.abstractmethod
    def fetch(self, refs: Iterable[MessageRef], *, spool_dir: Path,
              inline_limit: int = 8 * 1024 * 1024, batch_size: int = 100
              ) -> Iterator[RawMessage]:
        """Fetch raw RFC 5322 bytes of ``refs`` in batches, in order, without marking them
        read. Messages larger than ``inline_limit`` are written to a file in ``spool_dir``.
        A ref that vanished meanwhile is skipped."""

    @abc.abstractmethod
    def move(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        """Move to ``target_folder`` (created if missing): MOVE where offered, else COPY +
        \\Deleted + UID EXPUNGE of just these messages. POP3: not supported (raises)."""

    @abc.abstractmethod
    def copy(self, refs: Iterable[MessageRef], target_folder: str) -> None:
        """Copy to ``target_folder`` (created if missing)."""

    @abc.abstractmethod
    def delete(self, refs: Iterable[MessageRef]) -> None:
        """Delete permanently (IMAP: \\Deleted + UID EXPUNGE; POP3: DELE + QUIT)."""

    @abc.abstractmethod
    def set_flags(self, refs: Iterable[MessageRef], flags: Iterable[str], *, add: bool = True
                  ) -> None:
        """Add or remove flags such as ``\\Seen`` (no-op where flags are not supported)."""

    @abc.abstractmethod
    def wait_for_changes(self, folder: str, timeout: float) -> bool:
        """Block until the folder may have new mail or ``timeout`` seconds passed.

        IMAP IDLE where offered (re-issued before 29 minutes), else NOOP polling; returns
        True when the server signalled a change, False on timeout. Callers always follow
        with :meth:`list_messages`, so a spurious True is harmless."""


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    accepted: bool
    code: int
    message: str


@dataclass(frozen=True)
class SendResult:
    """What the server said about one mail."""

    message_id: str
    accepted: list[str]
    refused: list[RecipientStatus] = field(default_factory=list)
    recipients: list[RecipientStatus] = field(default_factory=list)
    server_reply: str = ""         # e.g. "250 2.0.0 Ok: queued as 4Xyz"

    @property
    def partial(self) -> bool:
        return bool(self.refused) and bool(self.accepted)


@dataclass(frozen=True)
class Envelope:
    sender: str                    # MAIL FROM (may be "" for a null sender)
    recipients: tuple[str, ...]    # RCPT TO, including Bcc
    smtputf8: bool = False


class MailSender(abc.ABC):
    """Send raw MIME. Async; one instance may hold several connections.

    Raises :class:`postline.errors.DeliveryError` when the mail was not accepted
    (``retriable`` tells whether to try again), ConnectError/TLSError/AuthError when the
    server could not be used at all.
    """

    async def __aenter__(self) -> MailSender:
        try:
            await self.connect()
        except BaseException:
            await self.close()  # __aexit__ does not run when __aenter__ raises
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open (at least) one connection now, to fail early on bad settings."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close all connections; never raises."""

    @abc.abstractmethod
    async def send(self, envelope: Envelope, message: bytes, *, message_id: str = ""
                   ) -> SendResult:
        """Send one mail. Returns when the server accepted DATA for at least one recipient."""

    @property
    @abc.abstractmethod
    def max_message_size(self) -> int | None:
        """The server's SIZE limit in octets, where it announced one."""

    @property
    @abc.abstractmethod
    def supports_smtputf8(self) -> bool:
        """Whether internationalised local parts may be sent."""
