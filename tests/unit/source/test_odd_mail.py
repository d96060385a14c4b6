"""Odd but real mail: each becomes a schema-valid record with a defect saying what was odd,
and never stops the batch it came in (parser + record build as test_corpus.py runs them,
in memory and spooled to a file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postline.protocols.base import MessageRef, RawMessage
from postline.source.filters import AttachmentRules, MailFilter
from postline.source.parse import parse_mail
from postline.source.record import MailPlace, build_record, validate_record
from postline.workflow import mailjob

PLACE = MailPlace(connection="Box", folder="INBOX", folder_version="7", server_id="1")
HEAD = b"From: a@b.c\r\nTo: d@e.f\r\nDate: Wed, 01 May 2024 12:00:00 +0000\r\n"


def record_of(raw: bytes, tmp_path: Path, *, spooled: bool = False) -> dict:
    if spooled:
        path = tmp_path / "mail.eml"
        path.write_bytes(raw)
        kw: dict = {"path": path}
    else:
        kw = {"data": raw}
    parsed = parse_mail(policy=AttachmentRules(load=True), work_dir=tmp_path / "work", **kw)
    record = build_record(parsed, place=PLACE, source="Src", stream_name="s", size=len(raw))
    validate_record(record)
    return record


def has_defect(record: dict, text: str) -> bool:
    return any(text in d for d in record["defects"])


# -- 1. charset names that are codecs but not text encodings ------------------------------

NOT_TEXT = ["base64", "rot13", "hex", "zlib", "uu", "quopri", "bz2", "undefined", "idna",
            "punycode", "utf\x008"]


@pytest.mark.parametrize("name", NOT_TEXT + ["x-unknown"])
def test_text_codec_refuses_what_cannot_decode_mail(name):
    from postline.source.headers import text_codec

    assert text_codec(name) is None


@pytest.mark.parametrize("name, codec", [("utf-8", "utf-8"), ("us-ascii", "utf-8"),
                                         ("iso-8859-1", "iso-8859-1"), ("utf-16", "utf-16")])
def test_text_codec_keeps_real_charsets(name, codec):
    from postline.source.headers import text_codec

    assert text_codec(name) == codec


@pytest.mark.parametrize("name", [n for n in NOT_TEXT if "\x00" not in n])
def test_non_text_charset_in_headers_is_a_defect(name, tmp_path):
    cs = name.encode()
    raw = (b"From: =?" + cs + b"?Q?J=E4rgen?= <j@x.de>\r\nSubject: =?" + cs + b"?Q?x?=\r\n"
           b"Date: Wed, 01 May 2024 12:00:00 +0000\r\n\r\nbody\r\n")
    record = record_of(raw, tmp_path)
    assert record["subject"] == "x"
    assert record["from"] == [{"name": "Järgen", "address": "j@x.de"}]
    assert has_defect(record, f"unknown charset {name!r} in header")


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spooled"])
@pytest.mark.parametrize("name", NOT_TEXT)
def test_non_text_charset_of_a_body_or_filename_is_a_defect(name, spooled, tmp_path):
    cs = name.encode()
    raw = (HEAD + b'Subject: s\r\nContent-Type: multipart/mixed; boundary="BB"\r\n\r\n'
           b'--BB\r\nContent-Type: text/plain; charset="' + cs + b'"\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n'
           b"--BB\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename*=" + cs + b"''%C3%A4.pdf\r\n\r\n"
           b"x\r\n--BB--\r\n")
    record = record_of(raw, tmp_path, spooled=spooled)
    assert record["parser"] == "fast"
    assert record["text"] == "Grüße"
    assert record["attachments"][0]["filename"] == "ä.pdf"
    assert has_defect(record, f"unknown charset {name!r} in text/plain")
    assert has_defect(record, f"unknown charset {name!r} in parameter")


def _settings(tmp_path: Path) -> mailjob.MailSettings:
    return mailjob.MailSettings(
        source="Src", connection="Box", stream_name=lambda m: "s", mail_filter=MailFilter(),
        attachments=AttachmentRules(), reprocess="manual", on_failure="skip", max_retries=0,
        min_backoff=1, max_backoff=1, work_dir=tmp_path, attachments_home=lambda k: tmp_path)


def _raw(data: bytes, uid: str) -> RawMessage:
    return RawMessage(ref=MessageRef(folder="INBOX", folder_version="7", id=uid), data=data)


def test_prepare_reads_a_mail_with_a_non_text_charset(tmp_path):
    prep = mailjob.prepare(_raw(b"From: a@b.c\r\nSubject: =?base64?Q?x?=\r\n\r\nb\r\n", "1"),
                           s=_settings(tmp_path))
    assert isinstance(prep, mailjob.Prepared)
    assert prep.subject == "x"


def test_a_header_bug_fails_that_mail_only(tmp_path, monkeypatch):
    # whatever header_summary trips over costs the one mail, not the round of its batch
    real = mailjob.header_summary

    def summary(parsed):
        if parsed.header("subject") == "poison":
            raise RuntimeError("boom")
        return real(parsed)

    monkeypatch.setattr(mailjob, "header_summary", summary)
    s = _settings(tmp_path)
    bad = mailjob.prepare(_raw(b"Subject: poison\r\nMessage-ID: <1@x>\r\n\r\nb\r\n", "1"), s=s)
    good = mailjob.prepare(_raw(b"Subject: fine\r\nMessage-ID: <2@x>\r\n\r\nb\r\n", "2"), s=s)
    assert isinstance(bad, mailjob.JobResult)
    assert (bad.label, bad.outcome.state) == ("failed", "failed")
    assert bad.outcome.reason == "headers: RuntimeError: boom"
    assert bad.outcome.message_id.startswith("sha256:")
    assert isinstance(good, mailjob.Prepared)


# -- 2. years below 1000 -------------------------------------------------------------------

@pytest.mark.parametrize("date, iso", [
    ("Wed, 01 May 200 14:00:00 +0000", "0200-05-01T14:00:00Z"),
    ("Wed, 1 May 999 12:00:00 GMT", "0999-05-01T12:00:00Z"),
])
def test_three_digit_years_are_zero_padded(date, iso, tmp_path):
    raw = (b"From: a@b.c\r\nReceived: from x by y; " + date.encode() + b"\r\nDate: "
           + date.encode() + b"\r\n\r\nx\r\n")
    record = record_of(raw, tmp_path)
    assert (record["date"], record["received"]) == (iso, iso)


# -- 3. the stdlib fallback reads what the fast path reads ---------------------------------

def _nested(depth: int, inner: bytes) -> bytes:
    # deeper than mime.MAX_DEPTH: the fast parser gives up, the stdlib parser reads it
    out = b""
    for i in range(depth):
        out += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    out += inner
    for i in reversed(range(depth)):
        out += b"\r\n--b%d--\r\n" % i
    return out


@pytest.mark.parametrize("depth, parser", [(3, "fast"), (41, "stdlib")])
def test_stdlib_fallback_agrees_with_the_fast_path(depth, parser, tmp_path):
    raw = (b"From: J\xfcrgen <j@x.de>\r\nSubject: \xc4rger\r\n"
           b"Date: Wed, 01 May 2024 12:00:00 +0000\r\n"
           + _nested(depth, b'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n'
                     b"--BB\r\nContent-Type: text/plain\r\n\r\nouter\r\n"
                     b"--BB\r\nContent-Type: message/rfc822\r\n\r\n"
                     b"From: x@y\r\nSubject: =?utf-8?Q?inn=C3=A9r?=\r\n\r\ninner body\r\n"
                     b"--BB--"))
    record = record_of(raw, tmp_path)
    assert record["parser"] == parser
    assert record["subject"] == "Ärger"
    assert record["from"] == [{"name": "Jürgen", "address": "j@x.de"}]
    assert {"name": "Subject", "value": "Ärger"} in record["headers"]
    assert has_defect(record, "8-bit header Subject is not UTF-8; decoded as windows-1252")
    assert record["text"].strip() == "outer"
    [att] = record["attachments"]
    assert (att["filename"], att["content_type"]) == ("innér.eml", "message/rfc822")


# -- 4. bare CR line ends ------------------------------------------------------------------

@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spooled"])
def test_bare_cr_in_the_header_block_ends_a_line(spooled, tmp_path):
    raw = b"From: a@b.c\rSubject: hi\r\nDate: Wed, 01 May 2024 12:00:00 +0000\r\n\r\nbody\r\n"
    record = record_of(raw, tmp_path, spooled=spooled)
    assert record["from"] == [{"name": "", "address": "a@b.c"}]
    assert record["subject"] == "hi"
    assert record["text"] == "body\n"
    assert has_defect(record, "bare CR line end in the header block")


def test_bare_cr_empty_line_ends_the_header_block(tmp_path):
    raw = b"From: a@b.c\rSubject: hi\r\rbody\nmore\n"
    record = record_of(raw, tmp_path)
    assert (record["subject"], record["text"]) == ("hi", "body\nmore\n")


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spooled"])
def test_a_mail_with_only_cr_line_ends_keeps_its_body(spooled, tmp_path):
    raw = (b"From: a@b.c\rSubject: hi\rDate: Wed, 01 May 2024 12:00:00 +0000\r"
           b'Content-Type: multipart/mixed; boundary="BB"\r\r--BB\rContent-Type: text/plain\r\r'
           b"line one\rline two\r--BB\rContent-Type: application/pdf\r\r%PDF\r--BB--\r")
    record = record_of(raw, tmp_path, spooled=spooled)
    assert record["subject"] == "hi"
    assert record["text"] == "line one\nline two"
    assert [a["content_type"] for a in record["attachments"]] == ["application/pdf"]
    assert has_defect(record, "only CR line ends")


# -- 5. time zones -------------------------------------------------------------------------

@pytest.mark.parametrize("zone, iso, defect", [
    ("+0200", "2024-05-01T10:00:00Z", None),
    ("+02:00", "2024-05-01T10:00:00Z", None),
    ("-0000", "2024-05-01T12:00:00Z", None),
    ("EST", "2024-05-01T17:00:00Z", None),
    ("+0200 (CEST)", "2024-05-01T10:00:00Z", None),
    ("XYZ", "2024-05-01T12:00:00Z", "Date has no time zone; taken as UTC"),
    ("", "2024-05-01T12:00:00Z", "Date has no time zone; taken as UTC"),
    ("+9999", "2024-05-01T12:00:00Z", "Date has an invalid time zone +9999; taken as UTC"),
    ("+0160", "2024-05-01T12:00:00Z", "Date has an invalid time zone +0160; taken as UTC"),
    ("+1500", "2024-05-01T12:00:00Z", "Date has an invalid time zone +1500; taken as UTC"),
])
def test_time_zones(zone, iso, defect, tmp_path):
    raw = HEAD.replace(b"+0000", zone.encode()) + b"Subject: s\r\n\r\nx\r\n"
    record = record_of(raw, tmp_path)
    assert record["date"] == iso
    zone_defects = [d for d in record["defects"] if "time zone" in d]
    assert zone_defects == ([defect] if defect else [])


# -- 6. specials inside encoded words ------------------------------------------------------

def test_raw_comma_in_an_encoded_display_name_does_not_split_the_address(tmp_path):
    raw = (b"From: =?utf-8?Q?Doe,_J=C3=BCrgen?= <j@d.com>\r\n"
           b"To: =?utf-8?Q?A=2C_B?= <ab@x>, =?utf-8?Q?C;D?= <cd@x>, e@f\r\n\r\nb\r\n")
    record = record_of(raw, tmp_path)
    assert record["from"] == [{"name": "Doe, Jürgen", "address": "j@d.com"}]
    assert record["to"] == [{"name": "A, B", "address": "ab@x"},
                            {"name": "C;D", "address": "cd@x"}, {"name": "", "address": "e@f"}]


# -- 7. Message-ID, NUL bytes, empty mail --------------------------------------------------

@pytest.mark.parametrize("value, mid, defect", [
    ("<a@b>", "<a@b>", None),
    ("<a@b> (comment)", "<a@b>", None),
    ("(x (y)) < a@b >", "<a@b>", None),
    ("<a@b> <c@d>", "<a@b>", None),
    ("a@b", "a@b", "not in angle brackets"),
    ("<>", None, "has no id"),
    ("(only a comment)", None, "has no id"),
    ("", None, "has no id"),
])
def test_message_id_is_normalised(value, mid, defect, tmp_path):
    record = record_of(HEAD + b"Message-ID: " + value.encode() + b"\r\n\r\nb\r\n", tmp_path)
    assert record["message_id"] == mid
    about_it = [d for d in record["defects"] if "Message-ID" in d]
    if defect is None:
        assert about_it == []
    else:
        assert len(about_it) == 1 and defect in about_it[0]


def test_mails_with_an_empty_message_id_are_not_duplicates_of_each_other(tmp_path):
    s = _settings(tmp_path)
    one = mailjob.prepare(_raw(b"Message-ID: <>\r\nSubject: one\r\n\r\nb\r\n", "1"), s=s)
    two = mailjob.prepare(_raw(b"Message-ID: <>\r\nSubject: two\r\n\r\nb\r\n", "2"), s=s)
    assert isinstance(one, mailjob.Prepared) and isinstance(two, mailjob.Prepared)
    assert one.identity.startswith("sha256:") and two.identity.startswith("sha256:")
    assert one.identity != two.identity


def test_a_second_message_id_header_is_a_defect(tmp_path):
    record = record_of(HEAD + b"Message-ID: <1@x>\r\nMessage-ID: <2@x>\r\n\r\nb\r\n", tmp_path)
    assert record["message_id"] == "<1@x>"
    assert has_defect(record, "2 Message-ID headers; the first is used")


def test_nul_bytes_in_subject_and_text(tmp_path):
    record = record_of(HEAD + b"Subject: he\x00llo\r\n\r\nbo\x00dy\r\n", tmp_path)
    assert record["subject"] == "hello"
    assert record["text"] == "bo\x00dy\n"
    assert has_defect(record, "NUL characters in Subject; removed")
    assert has_defect(record, "NUL characters in the text/plain body")


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spooled"])
def test_an_empty_mail_says_so(spooled, tmp_path):
    record = record_of(b"", tmp_path, spooled=spooled)
    assert (record["subject"], record["from"], record["attachments"]) == ("", [], [])
    assert not record["text"]
    assert has_defect(record, "empty mail")
