"""What a round looks at: the whole input folder, or only what changed since the last round.

A full listing costs what the folder holds (IMAP: ``UID SEARCH ALL`` and a metadata FETCH
of every mail, then a ledger lookup of every key). Where the reader honours a cursor
(``Capabilities.cursor``: IMAP), a round instead asks for what came after the cursor kept
in the ledger, and adds the ledger's *pending* entries of the folder (acquired, or final
but not yet moved): together that is everything a full listing would act on, because

* a server never gives a mail an identity below the cursor again (IMAP UIDs only grow
  within one UIDVALIDITY; a mail moved or copied back gets a new one), and
* a mail below the cursor whose entry is settled needs nothing from a round.

A full listing still runs when the folder has no cursor of this folder version (the first
round, after a UIDVALIDITY change, after a round that was cut short before its first full
listing ended), after ``postline ledger reset``/``retry`` (``rescan_at``: a reset mail still
in the folder lies below the cursor), and every ``polling.full_scan`` seconds, as a safety
net against a server that breaks the rules above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from postline.protocols.base import MailboxReader, MessageRef
from postline.state.ledger import Ledger

log = logging.getLogger("postline.workflow")


@dataclass
class Listing:
    """The refs a round considers, oldest first, and what to remember once it is done."""

    refs: list[MessageRef]
    cursor: str | None
    full: str          # why the whole folder was listed ("" when it was not)
    started: float     # when the listing began (Unix time)
    before: dict[str, str]


def list_folder(*, reader: MailboxReader, ledger: Ledger, source: str, folder: str,
                folder_version: str, every: float, now: float,
                key_of: Callable[[MessageRef], str]) -> Listing:
    """List ``folder`` (opened already, at ``folder_version``) for one round: in full or
    incrementally (see the module docstring). Raises what the reader raises."""
    if not reader.capabilities.cursor:
        refs, _ = reader.list_messages(folder)
        return Listing(refs=refs, cursor=None, full="the reader lists everything",
                       started=now, before={})
    st = ledger.folder_state(source, folder)
    full = _why_full(st, folder_version, every, now)
    refs, cursor = reader.list_messages(folder, cursor=None if full else st["cursor"])
    if full:
        log.debug("source %s: listing folder %r in full (%s)", source, folder, full)
        return Listing(refs=refs, cursor=cursor, full=full, started=now, before=st)
    # pending entries first: their UIDs are below the cursor, so this keeps the order
    seen = {key_of(r) for r in refs}
    pending = [MessageRef(folder=e.folder, folder_version=e.folder_version, id=e.server_id)
               for e in ledger.pending(source, folder)
               if e.folder_version == folder_version and e.server_id and e.key not in seen]
    return Listing(refs=pending + refs, cursor=cursor, full="", started=now, before=st)


def _why_full(st: dict[str, str], version: str, every: float, now: float) -> str:
    """Why this round must list the whole folder, or "" when it need not."""
    if "cursor" not in st or st.get("cursor_version") != version or "full_scan_at" not in st:
        return "no cursor of this folder version yet"
    last = float(st["full_scan_at"])
    if "rescan_at" in st and float(st["rescan_at"]) >= last:
        return "the ledger was reset"
    if now - last >= every:
        return f"the last full listing is older than polling.full_scan ({every:g} s)"
    return ""


def remember(ledger: Ledger, *, source: str, folder: str, folder_version: str,
             listing: Listing) -> None:
    """After a round that worked through everything ``listing`` held: keep its cursor (and,
    for a full listing, when it began). Writes nothing when nothing changed, so an idle
    round costs no commit."""
    if listing.cursor is None:  # a reader without cursors: nothing to keep
        return
    values: dict[str, str | None] = {}
    if listing.before.get("cursor") != listing.cursor:
        values["cursor"] = listing.cursor
    if listing.before.get("cursor_version") != folder_version:
        values["cursor_version"] = folder_version
    if listing.full:
        values["full_scan_at"] = repr(listing.started)
    if values:
        ledger.set_folder_state(source, folder, values)
