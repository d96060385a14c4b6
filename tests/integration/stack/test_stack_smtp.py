"""Postfix of the local stack: submission with STARTTLS / implicit TLS, AUTH via Dovecot, delivery."""

from __future__ import annotations

import imaplib
import smtplib
import uuid
from email.message import EmailMessage

import pytest
from stack_helpers import wait_for

from postline.testing.info import MailUser, StackInfo


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("sent through Postfix\n")
    return msg


def _inbox_subjects(stack: StackInfo, user: MailUser) -> list[bytes]:
    imap = imaplib.IMAP4(stack.host, stack.ports["imap"], timeout=10)
    imap.login(user.email, user.password)
    imap.select("INBOX", readonly=True)
    _, data = imap.search(None, "ALL")
    subjects = []
    for num in data[0].split():
        subjects.append(imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1].strip())
    imap.logout()
    return subjects


def test_submission_offers_what_clients_need(mail_stack: StackInfo) -> None:
    with smtplib.SMTP(mail_stack.host, mail_stack.ports["smtp"], timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        for ext in ("pipelining", "smtputf8", "auth"):
            assert smtp.has_extn(ext), ext
        assert smtp.esmtp_features["size"] == str(50 * 1024 * 1024)
        assert set(smtp.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN", "XOAUTH2",
                                                            "OAUTHBEARER"}


def test_starttls_auth_plain_delivers_into_dovecot(mail_stack: StackInfo,
                                                    mailbox_user: MailUser) -> None:
    recipient = MailUser.fresh("rcpt")
    subject = f"via postfix {uuid.uuid4().hex[:8]}"
    with smtplib.SMTP("localhost", mail_stack.ports["smtp"], timeout=10) as smtp:
        smtp.starttls(context=mail_stack.ssl_context())
        smtp.ehlo()
        smtp.login(mailbox_user.email, mailbox_user.password)  # AUTH PLAIN, checked by Dovecot
        refused = smtp.send_message(_message(mailbox_user.email, recipient.email, subject))
    assert refused == {}
    subjects = wait_for(lambda: _inbox_subjects(mail_stack, recipient), what="LMTP delivery")
    assert subjects == [f"Subject: {subject}".encode()]


def test_smtps_login_and_utf8_message(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    recipient = MailUser.fresh("utf8")
    with smtplib.SMTP_SSL(mail_stack.host, mail_stack.ports["smtps"],
                          context=mail_stack.ssl_context(), timeout=10) as smtp:
        smtp.login(mailbox_user.email, mailbox_user.password)
        smtp.send_message(_message(mailbox_user.email, recipient.email, "Grüße ✓"))
    assert wait_for(lambda: _inbox_subjects(mail_stack, recipient), what="delivery")


def test_wrong_password_gets_535(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    with smtplib.SMTP(mail_stack.host, mail_stack.ports["smtp"], timeout=10) as smtp:
        smtp.starttls(context=mail_stack.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.login(mailbox_user.email, "not-the-password")
    assert err.value.smtp_code == 535


def test_mail_to_other_domains_stays_on_the_machine(mail_stack: StackInfo,
                                                    mailbox_user: MailUser) -> None:
    email = f"x{uuid.uuid4().hex[:8]}@elsewhere.test"
    outside = MailUser(email=email, password=mail_stack.password(email))
    with smtplib.SMTP(mail_stack.host, mail_stack.ports["smtp"], timeout=10) as smtp:
        smtp.login(mailbox_user.email, mailbox_user.password)
        smtp.send_message(_message(mailbox_user.email, outside.email, "outside"))
    assert wait_for(lambda: _inbox_subjects(mail_stack, outside), what="delivery")


def test_smtp_sink_accepts_and_discards(mail_stack: StackInfo) -> None:
    with smtplib.SMTP(mail_stack.host, mail_stack.ports["smtp_sink"], timeout=10) as smtp:
        assert smtp.sendmail("a@example.test", ["b@example.test"], b"Subject: x\r\n\r\ny\r\n") == {}
