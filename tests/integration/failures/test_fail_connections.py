"""Connection failures through ``test-connection``, ``run --once`` and ``send``.

Each situation must give one clear line naming host:port and the likely fix; never a
traceback, never the password (checked with ``-vv``).
"""

from __future__ import annotations

import socket

import pytest
from failhelpers import WRONG_PASSWORD


def closed_port() -> int:
    """A port nothing listens on (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def silent_port():
    """A port that accepts connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=50) as server:
        yield server.getsockname()[1]


def check_all_commands(project, *, incoming: str, outgoing: str, secrets: tuple[str, ...]):
    """Run the three commands; each must fail with its expected words, cleanly."""
    tc = project.cli("test-connection", ".", "Mail", "-vv")
    assert tc.code == 1
    tc.assert_clean(*secrets)
    assert "FAILED incoming" in tc.out and "FAILED outgoing" in tc.out
    assert incoming in tc.out, tc.out
    assert outgoing in tc.out, tc.out

    run = project.cli("run", ".", "--once", "-vv")
    assert run.code == 1
    run.assert_clean(*secrets)
    assert run.error.startswith("postline: error: workflow W: "), run.err
    assert incoming in run.error

    send = project.cli("send", ".", "Out", "--message", "-", "-vv", stdin=project.message())
    assert send.code == 1
    send.assert_clean(*secrets)
    assert outgoing in send.error, send.err
    return tc, run, send


def test_wrong_password(stack_project):
    p = stack_project(password=WRONG_PASSWORD)
    user = p.user.email
    tc, run, _ = check_all_commands(
        p, incoming=f"IMAP login as {user} at 127.0.0.1:{p.stack.ports['imaps']} failed",
        outgoing=f"SMTP login as {user} at 127.0.0.1:{p.stack.ports['smtp']} failed",
        secrets=(WRONG_PASSWORD,))
    assert "fix: check the user and the password in the Secret" in tc.out
    assert run.error.endswith("(check the user and the password in the Secret)")


def test_host_that_does_not_resolve(stack_project):
    p = stack_project(incoming={"host": "mail.postline-qa.invalid"},
                      outgoing={"host": "smtp.postline-qa.invalid"})
    check_all_commands(p, incoming="cannot resolve host name 'mail.postline-qa.invalid'",
                       outgoing="cannot resolve host name 'smtp.postline-qa.invalid'",
                       secrets=(p.user.password,))


def test_connection_refused(stack_project):
    port = closed_port()
    p = stack_project(incoming={"port": port}, outgoing={"port": port})
    check_all_commands(p, incoming=f"connection to 127.0.0.1:{port} refused: nothing is "
                                   "listening there",
                       outgoing=f"connection to 127.0.0.1:{port} refused",
                       secrets=(p.user.password,))


def test_tls_to_a_plaintext_port(stack_project, mail_stack):
    ports = mail_stack.ports
    p = stack_project(incoming={"security": "tls", "port": ports["imap"]},
                      outgoing={"security": "tls", "port": ports["smtp"]})
    tc, _, _ = check_all_commands(
        p,
        incoming=f"TLS handshake with 127.0.0.1:{ports['imap']} failed: the port seems to "
                 "speak plaintext",
        outgoing=f"TLS handshake with 127.0.0.1:{ports['smtp']} failed: the port seems to "
                 "speak plaintext",
        secrets=(p.user.password,))
    assert "try security: starttls" in tc.out


def test_untrusted_certificate(stack_project):
    p = stack_project(incoming={"ca_file": None}, outgoing={"ca_file": None})
    ports = p.stack.ports
    tc, _, _ = check_all_commands(
        p, incoming=f"TLS to 127.0.0.1:{ports['imaps']}: certificate not trusted",
        outgoing=f"TLS to 127.0.0.1:{ports['smtp']}: certificate not trusted",
        secrets=(p.user.password,))
    assert "fix: self-signed or private CA? set ca_file to the CA's PEM file" in tc.out


def test_server_that_never_answers(stack_project, silent_port):
    p = stack_project(incoming={"port": silent_port, "connect_timeout": 1},
                      outgoing={"port": silent_port, "connect_timeout": 1})
    tc, _, _ = check_all_commands(
        p, incoming=f"127.0.0.1:{silent_port} did not answer after 1 s while waiting for the "
                    "TLS handshake",
        outgoing=f"no greeting from 127.0.0.1:{silent_port} within 1 s",
        secrets=(p.user.password,))
    # the TLS handshake is bounded by connect_timeout, so that is the knob to name
    assert "raise connect_timeout if it is just slow" in tc.out


def test_wrong_port_speaks_another_protocol(stack_project, mail_stack):
    ports = mail_stack.ports
    p = stack_project(incoming={"port": ports["pop3s"]}, outgoing={"port": ports["imap"]})
    check_all_commands(
        p, incoming=f"no valid IMAP greeting from 127.0.0.1:{ports['pop3s']}",
        outgoing=f"127.0.0.1:{ports['imap']} does not speak SMTP: it answered like an IMAP "
                 "server",
        secrets=(p.user.password,))


def test_wrong_port_message_says_what_answered(stack_project, mail_stack):
    ports = mail_stack.ports
    p = stack_project(incoming={"port": ports["pop3s"]}, outgoing={"port": ports["imap"]})
    tc = p.cli("test-connection", ".", "Mail")
    assert ": None" not in tc.out
    assert "expect TLS" not in tc.out
    assert "it answered like a POP3 server" in tc.out, tc.out
    assert "it answered like an IMAP server" in tc.out, tc.out


def test_oauth_wrong_client_secret_never_shown(stack_project, mail_stack):
    """A rejected client secret: one line from the authority's words, the secret nowhere."""
    cred = {"type": "oauth_client_credentials", "authority": mail_stack.oidc_authority,
            "client_id": mail_stack.cc_client_id, "scopes": list(mail_stack.mail_scopes),
            "client_secret": "MailSecrets.password"}
    p = stack_project(incoming={"credential": cred, "user": mail_stack.cc_mailbox},
                      outgoing={"credential": cred, "user": mail_stack.cc_mailbox},
                      password=WRONG_PASSWORD)
    tc = p.cli("test-connection", ".", "Mail", "-vv")
    assert tc.code == 1
    tc.assert_clean(WRONG_PASSWORD)
    assert "invalid_client" in tc.out, tc.out
    run = p.cli("run", ".", "--once", "-vv")
    assert run.code == 1
    run.assert_clean(WRONG_PASSWORD)
    assert "invalid_client" in run.error
