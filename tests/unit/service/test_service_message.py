"""EmailMessage shapes, extensions and every validation error (with its field)."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from postline.errors import MessageError
from postline.service.message import normalise
from postline.service.mime import (
    build,
    message_from_json,
    message_to_json,
    new_identity,
)

A = {"Address": "ann@example.test"}


def wire(msg: dict, *, smtputf8: bool = False):
    out = normalise(msg)
    env, raw = build(out, new_identity(out), smtputf8=smtputf8)
    return out, env, raw, email.message_from_bytes(raw, policy=email.policy.default)


@pytest.mark.parametrize("shape, expected_from", [
    ({"From": "me@example.test"}, "me@example.test"),
    ({"From": "Me Myself <me@example.test>"}, "Me Myself <me@example.test>"),
    ({"from": {"Address": "me@example.test", "PersonalName": "Me"}}, "Me <me@example.test>"),
    ({"FROM": [{"address": "me@example.test", "personalname": "Me"}]}, "Me <me@example.test>"),
    ({"From": {"Address": "me@example.test", "Name": "Zoë"}}, "Zoë <me@example.test>"),
])
def test_from_shapes(shape, expected_from):
    _, env, _, parsed = wire({**shape, "To": [A], "Subject": "s", "Body": "b"})
    assert str(parsed["From"]) == expected_from
    assert env.sender == "me@example.test"


def test_two_from_addresses_get_a_sender_header():
    _, env, _, parsed = wire({"From": [{"Address": "a@example.test"}, {"Address": "b@example.test"}],
                              "To": [A]})
    assert parsed["Sender"] == "a@example.test"
    assert env.sender == "a@example.test"


@pytest.mark.parametrize("key_to, key_cc, key_bcc", [
    ("To", "Cc", "Bcc"), ("to", "cc", "bcc"), ("TO", "CC", "BCC")])
def test_recipient_lists(key_to, key_cc, key_bcc):
    out, env, raw, parsed = wire({
        "From": "me@example.test",
        key_to: [{"Address": "a@example.test", "PersonalName": "Doe, Ann"}],
        key_cc: [{"Address": "c@example.test"}],
        key_bcc: [{"Address": "hidden@example.test"}]})
    assert env.recipients == ("a@example.test", "c@example.test", "hidden@example.test")
    assert parsed["To"].addresses[0].display_name == "Doe, Ann"
    assert parsed["Cc"] == "c@example.test"
    assert parsed["Bcc"] is None and b"hidden@" not in raw


def test_comma_and_semicolon_lists():
    _, env, raw, parsed = wire({"From": "me@example.test",
                                "ToList": '"Doe, Ann" <a@example.test>; b@example.test',
                                "CcList": "c@example.test,d@example.test",
                                "BccList": "x@example.test ; y@example.test"})
    assert env.recipients == tuple(f"{c}@example.test" for c in "abcdxy")
    assert [a.addr_spec for a in parsed["To"].addresses] == ["a@example.test", "b@example.test"]
    assert b"x@example.test" not in raw and b"y@example.test" not in raw


def test_duplicate_recipients_are_sent_once():
    _, env, _, _ = wire({"From": "me@example.test", "To": [A], "Cc": [A], "BccList": "ANN@example.test"})
    assert env.recipients == ("ann@example.test",)


def test_plain_body_and_legacy_text():
    for key in ("Body", "Text", "body"):
        _, _, _, parsed = wire({"From": "me@example.test", "To": [A], key: "Grüße\nzweite Zeile"})
        assert parsed.get_content_type() == "text/plain"
        assert parsed.get_content().replace("\r\n", "\n") == "Grüße\nzweite Zeile\n"


def test_html_body_becomes_alternative_with_generated_text():
    out, _, _, parsed = wire({"From": "me@example.test", "To": [A],
                              "Body": "<p>Hello <b>Ann</b></p><p><a href='https://x.test/r'>report</a></p>"})
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert "Hello Ann" in plain and "report (https://x.test/r)" in plain and "<" not in plain
    assert "<b>Ann</b>" in html


def test_explicit_html_and_text():
    _, _, _, parsed = wire({"From": "me@example.test", "To": [A], "Html": "<p>rich</p>", "Text": "plain"})
    assert parsed.get_body(("plain",)).get_content().strip() == "plain"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>rich</p>"


def test_attachments_base64_and_path(tmp_path):
    f = tmp_path / "report.csv"
    f.write_bytes(b"a,b\n1,2\n")
    _, _, _, parsed = wire({
        "From": "me@example.test", "To": [A], "Body": "<p>see attached</p>",
        "Attachments": [
            {"FileName": "Übersicht.pdf", "ContentType": "application/pdf",
             "Content": base64.b64encode(b"%PDF-1.4 fake").decode()},
            {"Path": str(f)}]})
    assert parsed.get_content_type() == "multipart/mixed"
    atts = list(parsed.iter_attachments())
    assert [a.get_filename() for a in atts] == ["Übersicht.pdf", "report.csv"]
    assert atts[0].get_content() == b"%PDF-1.4 fake"
    assert atts[1].get_content_type() == "text/csv"
    assert atts[1].get_payload(decode=True) == b"a,b\n1,2\n"
    assert parsed.get_body(("html",)) is not None


def test_reply_to_headers_priority_and_non_ascii_subject():
    _, _, raw, parsed = wire({
        "From": "Jürgen Müller <me@example.test>", "To": [A], "Subject": "Grüße 📨 Bericht",
        "ReplyTo": "Support <help@example.test>", "Headers": {"X-Job": "42", "In-Reply-To": "<a@b>"},
        "Priority": "High"})
    assert raw.isascii()  # encoded words, no raw UTF-8 without SMTPUTF8
    assert parsed["Subject"] == "Grüße 📨 Bericht"
    assert str(parsed["From"]) == "Jürgen Müller <me@example.test>"
    assert parsed["Reply-To"] == "Support <help@example.test>"
    assert parsed["X-Job"] == "42" and parsed["In-Reply-To"] == "<a@b>"
    assert parsed["X-Priority"].startswith("1") and parsed["Importance"] == "high"
    assert parsed["Message-ID"].startswith("<") and parsed["Date"]


def test_idna_domain_is_punycode_without_smtputf8():
    _, env, raw, parsed = wire({"From": "me@bücher.example", "To": [{"Address": "ann@münchen.example"}]})
    assert env.sender == "me@xn--bcher-kva.example"
    assert env.recipients == ("ann@xn--mnchen-3ya.example",)
    assert not env.smtputf8 and raw.isascii()


def test_utf8_local_part_needs_smtputf8():
    msg = {"From": "me@example.test", "To": [{"Address": "jörg@example.test"}]}
    _, env, raw, _ = wire(msg, smtputf8=True)
    assert env.smtputf8 and env.recipients == ("jörg@example.test",)
    assert "jörg@example.test".encode() in raw
    with pytest.raises(MessageError) as err:
        wire(msg, smtputf8=False)
    assert err.value.field == "To" and "SMTPUTF8" in str(err.value)


def test_outbox_round_trip_keeps_the_message(tmp_path):
    out = normalise({"From": "Zoë <me@example.test>", "ToList": "a@example.test", "Bcc": [A],
                     "Html": "<p>x</p>", "Attachments": [{"FileName": "a.bin", "Content": "AAE="}],
                     "Headers": {"X-A": "1"}, "Priority": "low"})
    assert message_from_json(message_to_json(out)) == out


@pytest.mark.parametrize("msg, field, words", [
    ({"To": [A]}, "From", "From is missing"),
    ({"From": "me@example.test"}, "To", "no recipient"),
    ({"From": "me@example.test", "To": [A], "ToList": "b@example.test"}, "To,ToList", "both To and ToList"),
    ({"From": "me@example.test", "cc": [A], "CCLIST": "b@example.test"}, "cc,CCLIST", "both cc and CCLIST"),
    ({"From": "me@example.test", "Bcc": [A], "BccList": "b@example.test"}, "Bcc,BccList", "both"),
    ({"From": "me@example.test", "To": [{"Address": "not-an-address"}]}, "To[0].Address", "not an email address"),
    ({"From": "me@example.test", "ToList": "a@example.test, b@@x"}, "ToList[1]", "not an email address"),
    ({"From": "me@example.test", "To": [{"Address": "a@-bad-.test"}]}, "To[0].Address", "invalid domain"),
    ({"From": "me@exam ple.test", "To": [A]}, "From", "invalid domain"),
    ({"From": "me@example.test", "To": [A], "Subject": "hi\r\nBcc: victim@example.test"}, "Subject", "line break"),
    ({"From": "me@example.test", "To": [{"Address": "a@example.test", "PersonalName": "x\nBcc: v@x"}]},
     "To[0].Address", "line break"),
    ({"From": "me@example.test\r\nBcc: v@example.test", "To": [A]}, "From", "line break"),
    ({"From": "me@example.test", "ToList": "a@example.test\nBcc: v@x"}, "ToList", "line break"),
    ({"From": "me@example.test", "To": [A], "Headers": {"X-A": "1\r\nBcc: v@x"}}, "Headers.X-A", "line break"),
    ({"From": "me@example.test", "To": [A], "Headers": {"Bad Name": "1"}}, "Headers.Bad Name", "not a valid header"),
    ({"From": "me@example.test", "To": [A], "Headers": {"Bcc": "v@x"}}, "Headers.Bcc", "set by postline"),
    ({"From": "me@example.test", "To": [A], "Subjekt": "x"}, "Subjekt", "did you mean Subject"),
    ({"From": "me@example.test", "To": [A], "Attachements": []}, "Attachements", "did you mean Attachments"),
    ({"From": "me@example.test", "To": [{"Adress": "a@example.test"}]}, "To[0].Adress", "did you mean Address"),
    ({"From": "me@example.test", "To": [A], "To ": [A]}, "To ", "same key"),
    ({"From": "me@example.test", "To": "a@example.test"}, "To", "use ToList"),
    ({"From": "me@example.test", "To": [A], "Priority": "urgent"}, "Priority", "high, normal or low"),
    ({"From": "me@example.test", "To": [A], "Attachments": [{"FileName": "a", "Content": "%%%"}]},
     "Attachments[0].Content", "not valid base64"),
    ({"From": "me@example.test", "To": [A], "Attachments": [{"Path": "/nonexistent/x.pdf"}]},
     "Attachments[0].Path", "cannot read"),
    ({"From": "me@example.test", "To": [A], "Attachments": [{"FileName": "a"}]},
     "Attachments[0].Content", "exactly one of Content"),
    ({"From": "me@example.test", "To": [A], "Attachments": [{"FileName": "a\r\nX: y", "Content": ""}]},
     "Attachments[0].FileName", "line break"),
    ({"From": "me@example.test", "To": [A], "Attachments": [{"FileName": "a", "ContentType": "pdf", "Content": ""}]},
     "Attachments[0].ContentType", "not a MIME type"),
    ({"From": "me@example.test", "To": [A], "Body": "plain", "Text": "other"}, "Body,Text", "legacy name"),
    ({"From": "me@example.test", "To": [A], "Subject": 5}, "Subject", "must be a string"),
    ("not a dict", "message", "JSON object"),
])
def test_errors_name_the_field(msg, field, words):
    with pytest.raises(MessageError) as err:
        normalise(msg)
    assert err.value.field == field
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_default_from_is_used_when_from_is_missing():
    out = normalise({"To": [A]}, default_from="Bot <bot@example.test>")
    assert out.sender[0].addr == "bot@example.test" and out.sender[0].name == "Bot"


SIMPLE = [
    {"From": "me@example.test", "To": [A], "Subject": "s", "Body": "b"},
    {"From": "Bench Mark <me@example.test>", "To": [A, {"Address": "b@example.test", "PersonalName": "Bob"}],
     "Cc": [{"Address": "c@example.test"}], "ReplyTo": "r@example.test", "Subject": "Daily report 42",
     "Body": "line one\nline two\n\n  indented\n", "Priority": "low", "Headers": {"X-Job": "nightly-7"}},
    {"From": [{"Address": "a@example.test"}, {"Address": "b@example.test"}], "To": [A], "Body": ""},
    {"From": "me@example.test", "To": [A], "Subject": "", "Body": "x" * 78},
    {"From": "me@example.test", "To": [A], "Body": "x" * 79},                      # long line: QP
    {"From": "me@example.test", "To": [A], "Body": ("word " * 20 + "\n") * 12},      # QP, > 10 lines
    {"From": "me@example.test", "To": [A], "Body": "Grüße, mostly ASCII text " * 5},  # QP
    {"From": "me@example.test", "To": [A], "Body": "trailing space \nx\r\ny\rz"},
]
FALLBACK = [
    {"From": "me@example.test", "To": [A], "Body": "日本語のテキスト" * 10},           # base64
    {"From": "me@example.test", "To": [A], "Subject": "Grüße", "Body": "b"},       # non-ASCII
    {"From": "me@example.test", "To": [A], "Body": "Grüße"},
    {"From": "J. Doe <me@example.test>", "To": [A], "Body": "b"},                  # quoted name
    {"From": "me@example.test", "To": [A], "Subject": "a  b", "Body": "b"},        # double space
    {"From": "me@example.test", "To": [A], "Subject": "=?utf-8?q?x?=", "Body": "b"},
    {"From": "me@example.test", "ToList": ", ".join(f"user{i}@example.test" for i in range(9)),
     "Body": "b"},                                                                 # folded header
    {"From": "me@example.test", "To": [A], "Body": "<p>b</p>"},                    # html
]


@pytest.mark.parametrize("msg", SIMPLE)
def test_fast_path_writes_the_same_bytes_as_the_stdlib(msg, monkeypatch):
    from postline.service import mime

    out = normalise(msg)
    identity = new_identity(out)
    _, fast = build(out, identity, smtputf8=False)
    monkeypatch.setattr(mime, "fast_plain", lambda *a: None)
    _, slow = build(out, identity, smtputf8=False)
    assert fast == slow


@pytest.mark.parametrize("msg, fast", [(m, True) for m in SIMPLE] + [(m, False) for m in FALLBACK])
def test_fast_path_is_taken_only_for_simple_mail(msg, fast):
    from postline.service.mime import fast_plain

    out = normalise(msg)
    assert (fast_plain(out, new_identity(out)) is not None) == fast
