"""Mails of hostile shapes (issue 15, item 4), shared by the unit and integration tests."""

from __future__ import annotations

HEAD = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
        b"Date: Wed, 01 May 2024 12:00:00 +0000\r\n")


def many_headers(n: int) -> bytes:
    """``n`` filler headers (~14 bytes each), the Subject after them."""
    filler = b"".join(b"X-%x: v\r\n" % i for i in range(n))
    return (HEAD + b"Message-ID: <headers-%d@example.test>\r\n" % n + filler
            + b"Subject: after %d headers\r\n\r\nbody\r\n" % n)


def many_cc(n: int) -> bytes:
    """One Cc header of ``n`` addresses, folded one a line."""
    cc = b",\r\n ".join(b"u%d@example.test" % i for i in range(n))
    return (HEAD + b"Subject: %d cc\r\nMessage-ID: <cc-%d@example.test>\r\nCc: " % (n, n)
            + cc + b"\r\n\r\nbody\r\n")


def many_parts(n: int) -> bytes:
    """``n`` tiny attachments in one multipart/mixed."""
    parts = b"".join(b"--BB\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Disposition: attachment; filename=\"f%d.bin\"\r\n\r\nAAAA\r\n"
                     % i for i in range(n))
    return (HEAD + b"Subject: %d parts\r\nMessage-ID: <parts-%d@example.test>\r\n"
            b"Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n" % (n, n)
            + parts + b"--BB--\r\n")


def deep(n: int) -> bytes:
    """multipart/mixed nested ``n`` deep, a text part at the bottom."""
    out = [HEAD + b"Subject: nested %d deep\r\nMessage-ID: <deep-%d@example.test>\r\n"
           b"Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n" % (n, n)]
    for i in range(1, n):
        out.append(b"--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n"
                   % (i - 1, i))
    out.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n--b%d--\r\n"
               % (n - 1, n - 1))
    out += [b"--b%d--\r\n" % i for i in range(n - 2, -1, -1)]
    return b"".join(out)


SHAPES = {
    "200k-headers": lambda: many_headers(200_000),
    "1m-headers": lambda: many_headers(1_000_000),
    "300k-cc": lambda: many_cc(300_000),
    "50k-parts": lambda: many_parts(50_000),
    "1000-deep": lambda: deep(1000),
}
