"""The content fingerprint of the duplicate check: what a re-delivery changes does not
count, what makes another mail does."""

from postline.source.filters import AttachmentRules
from postline.source.fingerprint import fingerprint
from postline.source.parse import parse_mail

MAIL = (b"From: Zo\xc3\xab <zoe@example.test>\nTo: r@example.test\nSubject: Hallo\n"
        b"Date: Wed, 01 May 2024 12:00:00 +0000\nMessage-ID: <a@example.test>\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        b"Hallo, \xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9 body\n")


def fp(raw: bytes, tmp_path) -> str:
    return fingerprint(parse_mail(data=raw, policy=AttachmentRules(load=False),
                                  work_dir=tmp_path / "work"))


def test_a_redelivered_copy_has_the_same_fingerprint(tmp_path):
    # what Dovecot's LMTP hands back: server headers on top, CRLF, a blank line at the end
    redelivered = (b"Return-Path: <x@example.test>\r\nDelivered-To: r@example.test\r\n"
                   b"Received: from a\r\n\tby b; Fri, 04 Dec 2026 22:05:03 +0000\r\n"
                   + MAIL.replace(b"\n", b"\r\n") + b"\r\n")
    assert fp(redelivered, tmp_path) == fp(MAIL, tmp_path)
    assert fp(b"X-Corrected: yes\n" + MAIL, tmp_path) == fp(MAIL, tmp_path)


def test_another_mail_with_the_same_message_id_differs(tmp_path):
    assert fp(MAIL.replace(b"Subject: Hallo", b"Subject: Hello"), tmp_path) != fp(MAIL, tmp_path)
    assert fp(MAIL.replace(b"body\n", b"body, changed\n"), tmp_path) != fp(MAIL, tmp_path)
