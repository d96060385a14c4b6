"""SMTP reply codes and capability words by name: equal to the numbers and words on the
wire, so replies, EHLO and CAPABILITY lists compare and print unchanged."""

from __future__ import annotations

from postline.protocols.capability_names import ImapCapability, SmtpExtension
from postline.protocols.smtp_status import SMTPStatus


def test_reply_codes_are_the_numbers():
    assert SMTPStatus.COMPLETED == 250 and SMTPStatus.AUTH_CONTINUE == 334
    assert f"{SMTPStatus.START_INPUT}" == "354" and str(SMTPStatus.READY) == "220"
    assert [SMTPStatus.positive(c) for c in (235, 250, 334, 451, 550)] == \
        [True, True, False, False, False]
    assert [SMTPStatus.transient(c) for c in (250, 421, 451, 550)] == [False, True, True, False]


def test_capability_words_are_the_words():
    ehlo = {"SIZE": "10240000", "8BITMIME": "", "PIPELINING": ""}
    assert SmtpExtension.EIGHTBITMIME in ehlo and ehlo[SmtpExtension.SIZE] == "10240000"
    assert ImapCapability.LITERAL_PLUS in ["IMAP4REV1", "LITERAL+"]
    assert f"{ImapCapability.SPECIAL_USE}" == "SPECIAL-USE"
