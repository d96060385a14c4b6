"""A mail's content fingerprint: what must agree, beside the Message-ID, for a mail to be a
duplicate of one already done.

The fingerprint is a SHA-256 over the From, Date and Subject headers and the decoded
content: every text and HTML body and every attachment (type, name, size and the SHA-256
of its decoded bytes, which the parser computes for the record anyway, so the
fingerprint costs no pass over the mail). Left out on purpose is everything a server adds
or rewrites when it delivers the same mail again -- Received, Return-Path,
Delivered-To, X-headers, the line endings, blank lines added at the end, a transfer
encoding changed on the way (a relay turning 8bit into quoted-printable) -- so a re-delivered
copy still matches, while a different mail that merely reuses a Message-ID (test suites, ticketing systems, scripts)
does not.
"""

from __future__ import annotations

import hashlib

from postline.source.mime import ParsedMail

# headers that make a mail this mail; the servers on the way leave them alone
_HEADERS = ("from", "date", "subject")


def fingerprint(mail: ParsedMail) -> str:
    """The hex SHA-256 fingerprint of ``mail`` (see the module docstring). Waits for the
    attachment hashes of the store thread; raises what storing an attachment raised."""
    h = hashlib.sha256()

    def add(*fields: str) -> None:
        for text in fields:
            h.update(text.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")

    for name in _HEADERS:
        # unfolded already; runs of white space are how a header is refolded, not content
        add(name, *(" ".join(v.split()) for v in mail.header_all(name)))
    # the bodies as decoded: the parser gives every line ending as \n already, and a
    # transfer encoding changed on the way decodes to the same text (hashing them costs
    # ~40 us for a mail with 10 KB of text; normalising them more would cost 150 us)
    for kind, bodies in (("text", mail.texts), ("html", mail.htmls)):
        for body in bodies:
            # trailing blank lines and spaces: a relay or an LMTP delivery may add a line
            # at the end (Dovecot's LMTP after smtplib, seen in the tests)
            add(kind, body.rstrip())
    for att in mail.attachments:
        add("attachment", att.content_type, att.filename or "", str(att.size), att.sha256)
    return h.hexdigest()
