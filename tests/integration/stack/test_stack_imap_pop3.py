"""Dovecot of the local stack: IMAP and POP3 logins with passwords, plaintext and TLS, delivery."""

from __future__ import annotations

import imaplib
import poplib
import ssl
import time

import pytest

from postline.testing.info import MailUser, StackInfo

MESSAGE = b"From: sender@example.test\r\nTo: {to}\r\nSubject: stack smoke\r\n\r\nhello from LMTP\r\n"


def test_imap_password_login_in_plaintext(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    imap = imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"], timeout=10)
    assert {"STARTTLS", "AUTH=PLAIN", "AUTH=LOGIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"} <= set(
        imap.capabilities)
    typ, _ = imap.login(mailbox_user.email, mailbox_user.password)
    assert typ == "OK"
    # what the source and service adapters rely on
    caps = set(imap.capability()[1][0].decode().split())
    assert {"IDLE", "MOVE", "UIDPLUS"} <= caps
    folders = b" ".join(imap.list()[1])
    for special in (b"\\Sent", b"\\Trash", b"\\Archive", b"\\Junk", b"\\Drafts"):
        assert special in folders
    imap.logout()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_imap_starttls_verifies_the_stack_certificate(mail_stack: StackInfo, host: str) -> None:
    imap = imaplib.IMAP4(host, mail_stack.ports["imap"], timeout=10)
    imap.starttls(ssl_context=mail_stack.ssl_context())  # full chain + host name check
    assert imap.login("alice@example.test", "alice-pass")[0] == "OK"
    imap.logout()


def test_imaps_login(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    imap = imaplib.IMAP4_SSL(mail_stack.host, mail_stack.ports["imaps"],
                             ssl_context=mail_stack.ssl_context(), timeout=10)
    assert imap.login(mailbox_user.email, mailbox_user.password)[0] == "OK"
    imap.logout()


def test_imaps_is_untrusted_without_the_stack_ca(mail_stack: StackInfo) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(mail_stack.host, mail_stack.ports["imaps"],
                          ssl_context=ssl.create_default_context(), timeout=10)


def test_wrong_password_is_refused_quickly(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    for attempt in ("wrong-1", "wrong-2", mailbox_user.password.upper()):
        imap = imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"], timeout=10)
        started = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(mailbox_user.email, attempt)
        assert time.monotonic() - started < 2.0  # auth_failure_delay = 0, no anvil penalty
        imap.logout()
    # and a good login right after several different wrong ones is not delayed either
    imap = imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"], timeout=10)
    started = time.monotonic()
    assert imap.login(mailbox_user.email, mailbox_user.password)[0] == "OK"
    assert time.monotonic() - started < 1.0
    imap.logout()


def test_another_users_password_is_refused(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    imap = imaplib.IMAP4(mail_stack.host, mail_stack.ports["imap"], timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(mailbox_user.email, "alice-pass")
    imap.logout()


def test_deliver_lands_in_the_inbox(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    mail_stack.deliver(mailbox_user.email, MESSAGE.replace(b"{to}", mailbox_user.email.encode()))
    assert any((mail_stack.mailbox_path(mailbox_user.email) / "new").iterdir())
    imap = imaplib.IMAP4_SSL(mail_stack.host, mail_stack.ports["imaps"],
                             ssl_context=mail_stack.ssl_context(), timeout=10)
    # user names are case-insensitive: one mailbox
    imap.login(mailbox_user.email.upper().replace("@EXAMPLE.TEST", "@example.test"),
               mailbox_user.password)
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    body = imap.fetch(b"1", "(BODY[TEXT])")[1][0][1]
    assert b"hello from LMTP" in body
    imap.logout()


def test_pop3_stls_login_sees_delivered_mail(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    mail_stack.deliver(mailbox_user.email, MESSAGE.replace(b"{to}", mailbox_user.email.encode()))
    pop = poplib.POP3(mail_stack.host, mail_stack.ports["pop3"], timeout=10)
    assert "STLS" in pop.capa()
    pop.stls(context=mail_stack.ssl_context())
    pop.user(mailbox_user.email)
    assert pop.pass_(mailbox_user.password).startswith(b"+OK")
    count, _size = pop.stat()
    assert count == 1
    assert b"hello from LMTP" in b"\n".join(pop.retr(1)[1])
    pop.quit()


def test_pop3s_login_and_wrong_password(mail_stack: StackInfo, mailbox_user: MailUser) -> None:
    pop = poplib.POP3_SSL(mail_stack.host, mail_stack.ports["pop3s"],
                          context=mail_stack.ssl_context(), timeout=10)
    pop.user(mailbox_user.email)
    assert pop.pass_(mailbox_user.password).startswith(b"+OK")
    pop.quit()
    pop = poplib.POP3_SSL(mail_stack.host, mail_stack.ports["pop3s"],
                          context=mail_stack.ssl_context(), timeout=10)
    pop.user(mailbox_user.email)
    with pytest.raises(poplib.error_proto, match="AUTH"):
        pop.pass_("not-the-password")
    pop.close()
