"""The header block ends at the first empty line, whichever line ending the mail uses."""

from __future__ import annotations

import pytest

from postline.source.mime import read_headers


@pytest.mark.parametrize("raw, body", [
    (b"A: 1\nB: 2\n\nbody\n\r\nmore", b"body\n\r\nmore"),
    (b"A: 1\r\nB: 2\r\n\r\nbody\n\nmore", b"body\n\nmore"),
    (b"A: 1\nB: 2\r\n\r\nbody", b"body"),
    (b"A: 1\r\nB: 2\n\nbody", b"body"),
    (b"A: 1\nB: 2\n", b""),
])
def test_header_block_end(raw, body):
    defects: list[str] = []
    headers, start = read_headers(raw, 0, len(raw), defects)
    assert headers == [("A", "1"), ("B", "2")]
    assert raw[start:] == body
    assert defects == []


def _blocks():
    import itertools
    import random

    lines = [b"Subject: plain", b"Subject:  spaced value  ", b"X-Folded: one", b" two",
             b"\tthree", b"To: a@b, c@d", b"Empty:", b"From x@y Mon Jan 1", b"no colon line",
             b"Bad Name: v", b"K:v:w", b"  ", b"\r", b"Caf\xc3\xa9: x", b"Subj: caf\xc3\xa9",
             b"Subj: \xe9t\xe9", b"A\tB: c"]
    rng = random.Random(5)
    for n, eol in itertools.product(range(1, 6), (b"\r\n", b"\n")):
        for _ in range(60):
            yield eol.join(rng.choice(lines) for _ in range(n)) + eol


def test_fast_header_lines_agree_with_the_line_by_line_reader():
    from postline.source.mime import _header_lines, _header_lines_ascii

    checked = 0
    for block in _blocks():
        fast = _header_lines_ascii(block)
        if fast is None:
            continue     # not a case for the fast path: the careful reader takes it
        defects: list[str] = []
        assert (fast, None) == _header_lines(block, defects), block   # (headers, no cut)
        assert defects == []
        checked += 1
    assert checked > 100


def test_fast_date_path_agrees_with_the_stdlib():
    import email.utils
    import random

    from postline.source.headers import _fast_date, iso_utc

    rng = random.Random(11)
    days = ["Mon, ", "tue,", "", "Sun,  "]
    months = ["Jan", "feb", "MAR", "Dec", "Foo"]
    checked = 0
    for _ in range(3000):
        text = (f"{rng.choice(days)}{rng.randint(0, 32)} {rng.choice(months)} "
                f"{rng.choice([1969, 1999, 2024, 9999, 2000])} {rng.randint(0, 24):02d}:"
                f"{rng.randint(0, 60):02d}{rng.choice(['', ':' + str(rng.randint(0, 61)).zfill(2)])}"
                f" {rng.choice('+-')}{rng.randint(0, 14):02d}{rng.choice([0, 30, 45, 99]):02d}")
        fast = _fast_date(text)
        try:
            slow = iso_utc(email.utils.parsedate_to_datetime(text))
        except (TypeError, ValueError, IndexError, OverflowError):
            slow = None
        if fast is not None:
            assert fast == slow, text
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize("raw, text", [
    ("=?utf-8?b?R3LDvMOfZQ==?= =?utf-8?q?_und_mehr?=", "Grüße und mehr"),
    ("Re: =?ISO-8859-1?Q?caf=E9?= ok", "Re: café ok"),
    # one character split over two words: joined before decoding
    ("=?utf-8?b?4pw=?= =?utf-8?b?kw==?=", "✓"),
    # plain text next to encoded words stays as it is, whatever its letters
    ("日本 =?utf-8?q?x?=", "日本 x"),
    ("=?utf-8*de?q?Gr=C3=BC=C3=9Fe?=", "Grüße"),             # RFC 2231 language
    ("=?utf-8?q?a=?=", "a="),                                 # as email.header reads it
    ("no words =? here", "no words =? here"),
])
def test_encoded_words(raw, text):
    from postline.source.headers import decode_words

    defects: list[str] = []
    assert decode_words(raw, defects) == text
    assert defects == []


def test_delimiter_search_through_dashes_agrees_with_find():
    """split_multipart looks for a boundary through its first "-" (memchr speed over
    base64); it must find exactly what bytes.find finds, whatever the dashes around."""
    import random

    from postline.source.mime import _find_delim

    rng = random.Random(7)
    for _ in range(20000):
        buf = bytes(rng.choice(b"ab-\r\n=-") for _ in range(rng.randint(0, 60)))
        delim = b"--" + bytes(rng.choice(b"ab=-") for _ in range(rng.randint(0, 3)))
        pos = rng.randint(0, len(buf))
        end = rng.randint(pos, len(buf))
        assert _find_delim(buf, delim, pos, end) == buf.find(delim, pos, end), (buf, delim)
