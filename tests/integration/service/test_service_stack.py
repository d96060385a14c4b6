"""Send through the stack's Postfix into Dovecot and read every mail back over IMAP."""

from __future__ import annotations

import base64

import pytest
from svc_helpers import open_stack_project, read_inbox

from postline.errors import MessageError
from postline.service import open_service

pytestmark = pytest.mark.stack


@pytest.fixture
def service(tmp_path, mail_stack, sender_user):
    project = open_stack_project(tmp_path / "proj", mail_stack, sender_user)
    return open_service(project, "Notify")


def test_every_shape_arrives(service, sender_user, mailbox_user, second_user, mail_stack):
    shapes = [
        {"From": sender_user.email, "To": [{"Address": mailbox_user.email}], "Subject": "s1",
         "Body": "plain"},
        {"from": {"Address": sender_user.email, "PersonalName": "Sender"},
         "toList": f"{mailbox_user.email}; {second_user.email}", "subject": "s2", "text": "legacy"},
        {"From": [{"Address": sender_user.email}], "To": [{"Address": mailbox_user.email,
                                                           "PersonalName": "Doe, Jane"}],
         "CcList": second_user.email, "Subject": "s3", "Html": "<p>h</p>", "Text": "t"},
    ]
    for msg in shapes:
        result = service.Send(msg)
        assert result.server_reply.startswith("250") and not result.refused
    got = read_inbox(mail_stack, mailbox_user, count=3)
    assert sorted(m["Subject"] for m in got) == ["s1", "s2", "s3"]
    by_subject = {m["Subject"]: m for m in got}
    assert by_subject["s1"].get_content().strip() == "plain"
    assert by_subject["s2"]["From"] == f"Sender <{sender_user.email}>"
    assert by_subject["s3"]["To"].addresses[0].display_name == "Doe, Jane"
    assert len(read_inbox(mail_stack, second_user, count=2)) == 2


def test_non_ascii_attachments_html_and_bcc(service, sender_user, mailbox_user, second_user,
                                            mail_stack, tmp_path):
    pdf = tmp_path / "Bericht März.pdf"
    pdf.write_bytes(b"%PDF-1.4 \x00\x01\x02 binary")
    result = service.Send({
        "From": {"Address": sender_user.email, "PersonalName": "Jürgen Müller"},
        "To": [{"Address": mailbox_user.email, "PersonalName": "Zoë Ångström"}],
        "Bcc": [{"Address": second_user.email}],
        "Subject": "Grüße aus Köln 📨 — Bericht",
        "Body": "<html><body><h1>Bericht</h1><p>Schöne Grüße</p></body></html>",
        "Attachments": [
            {"Path": str(pdf), "ContentType": "application/pdf"},
            {"FileName": "données.csv", "Content": base64.b64encode(b"a;b\n1;2\n").decode()}],
        "ReplyTo": "Support <support@example.test>", "Priority": "high",
        "Headers": {"X-Report-Id": "r-42"}})
    assert {r.address for r in result.recipients} == {mailbox_user.email, second_user.email}
    [to_mail] = read_inbox(mail_stack, mailbox_user, count=1)
    [bcc_mail] = read_inbox(mail_stack, second_user, count=1)
    for m in (to_mail, bcc_mail):
        assert m["Subject"] == "Grüße aus Köln 📨 — Bericht"
        assert str(m["From"]) == f"Jürgen Müller <{sender_user.email}>"
        assert m["To"].addresses[0].display_name == "Zoë Ångström"
        assert m["Bcc"] is None and second_user.email not in m.as_string()
        assert m["Reply-To"] == "Support <support@example.test>"
        assert m["X-Priority"].startswith("1") and m["X-Report-Id"] == "r-42"
        assert "Schöne Grüße" in m.get_body(("plain",)).get_content()
        assert "<h1>Bericht</h1>" in m.get_body(("html",)).get_content()
        atts = {a.get_filename(): a for a in m.iter_attachments()}
        assert atts["Bericht März.pdf"].get_content() == b"%PDF-1.4 \x00\x01\x02 binary"
        assert atts["données.csv"].get_payload(decode=True) == b"a;b\n1;2\n"


def test_send_and_forget_arrives_once(service, sender_user, mailbox_user, mail_stack):
    queued = [service.SendAndForget({"From": sender_user.email, "To": [{"Address": mailbox_user.email}],
                                     "Subject": f"queued {i}", "Body": "x"}) for i in range(5)]
    assert service.flush(30)
    assert {e.id for e in service.queued(state="sent")} == {q.id for q in queued}
    got = read_inbox(mail_stack, mailbox_user, count=5)
    assert sorted(m["Subject"] for m in got) == [f"queued {i}" for i in range(5)]
    assert len({m["Message-ID"] for m in got}) == 5
    assert {m["Message-ID"] for m in got} == {q.message_id for q in queued}


def test_errors_before_anything_is_sent(service, sender_user, mailbox_user):
    base = {"From": sender_user.email, "Subject": "x"}
    with pytest.raises(MessageError) as err:
        service.Send({**base, "To": [{"Address": mailbox_user.email}], "ToList": mailbox_user.email})
    assert err.value.field == "To,ToList"
    with pytest.raises(MessageError) as err:
        service.Send({**base, "To": [{"Address": mailbox_user.email}],
                      "Subject": "hi\r\nBcc: victim@example.test"})
    assert err.value.field == "Subject"
