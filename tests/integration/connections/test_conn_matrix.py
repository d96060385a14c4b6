"""Every sensible protocol x security x credential combination works against the stack."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from connhelpers import device_login, endpoint_data

from postline.protocols import Envelope, open_reader, open_sender

pytestmark = pytest.mark.stack

CREDENTIALS = ["secret", "oauth_client_credentials", "oauth_device_flow"]
SECURITIES = ["none", "starttls", "tls"]


def _user(stack, credential, mailbox_user):
    return stack.cc_mailbox if credential == "oauth_client_credentials" else mailbox_user.email


def _prepare(project, stack, mailbox_user, *, protocol, security, credential):
    user = _user(stack, credential, mailbox_user)
    direction = "outgoing" if protocol == "smtp" else "incoming"
    project.secrets["MailSecrets.password"] = mailbox_user.password
    project.secrets["MailSecrets.client_secret"] = stack.cc_client_secret
    project.add({"name": "Box", direction: endpoint_data(
        stack, protocol=protocol, security=security, credential=credential, user=user)})
    if credential == "oauth_device_flow":
        assert device_login(project, stack, connection="Box", direction=direction,
                            user=user) == user
        token_file = project.state_dir / "tokens" / f"Box-{direction}.bin"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert b"refresh_token" not in token_file.read_bytes()  # sealed, not plain JSON
    return user


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("security", SECURITIES)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_reader_connects(protocol, security, credential, project, mail_stack, mailbox_user):
    user = _prepare(project, mail_stack, mailbox_user, protocol=protocol, security=security,
                    credential=credential)
    subject = f"matrix {uuid.uuid4().hex}"
    mail_stack.deliver(user, f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    with open_reader(project, "Box") as reader:
        names = [f.name for f in reader.list_folders()]
        assert "INBOX" in names
        refs, _ = reader.list_messages("INBOX")
        bodies = [m.data for m in reader.fetch(refs, spool_dir=project.state_dir / "spool")]
    assert any(subject.encode() in b for b in bodies)


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("security", SECURITIES)
def test_sender_sends(security, credential, project, mail_stack, mailbox_user):
    user = _prepare(project, mail_stack, mailbox_user, protocol="smtp", security=security,
                    credential=credential)

    async def send():
        async with open_sender(project, "Box") as sender:
            return await sender.send(Envelope(sender=user, recipients=(user,)),
                                     b"Subject: matrix\r\n\r\nhello\r\n", message_id="m-1")

    result = asyncio.run(send())
    assert result.accepted == [user]
    assert result.server_reply.startswith("250")
