"""Header values that cannot be one line, headers a sender may not set, and mails the MIME
builder cannot build: refused at validation with the field named, and never ``unknown``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_fakes import MSG, FakeSender, make_project

from postline.errors import MessageError
from postline.service import open_service
from postline.service.message import normalise
from postline.service.mime import message_to_json, new_identity
from postline.web.app import create_app

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
A = {"Address": "ann@example.test"}

BAD = [("\u2028", "U+2028 (LINE SEPARATOR)"), ("\u2029", "U+2029 (PARAGRAPH SEPARATOR)"),
       ("\x85", "U+0085 (next line, NEL)"), ("\x0c", "U+000C (form feed)"),
       ("\x0b", "U+000B (vertical tab)"), ("\x1c", "U+001C (file separator)"),
       ("\x1d", "U+001D (group separator)"), ("\x1e", "U+001E (record separator)"),
       ("\x1f", "U+001F (unit separator)"), ("\x00", "U+0000 (NUL)"),
       ("\x01", "U+0001"), ("\x1b", "U+001B"), ("\x7f", "U+007F (DEL)")]

# where the character goes -> the field the error names
PLACES = [
    (lambda c: {**MSG, "Subject": f"Invoice{c}Bcc: v@example.test"}, "Subject"),
    (lambda c: {**MSG, "Headers": {"X-Ref": f"a{c}b"}}, "Headers.X-Ref"),
    (lambda c: {**MSG, "Headers": [{"Name": "X-Ref", "Value": f"a{c}b"}]}, "Headers.X-Ref"),
    (lambda c: {**MSG, "To": [{"Address": "ann@example.test", "PersonalName": f"Ann{c}X"}]},
     "To[0].Address"),
    (lambda c: {**MSG, "From": f"Rep{c}orts <reports@example.test>"}, "From"),
    (lambda c: {"From": MSG["From"], "ToList": f"B{c}ob <bob@example.test>"}, "ToList"),
    (lambda c: {**MSG, "Attachments": [{"FileName": f"a{c}.txt", "Content": "aGk="}]},
     "Attachments[0].FileName"),
]


@pytest.mark.parametrize("char, shown", BAD, ids=[b[1] for b in BAD])
@pytest.mark.parametrize("place", range(len(PLACES)))
def test_refused_at_validation_naming_the_field_and_the_character(char, shown, place):
    build, field = PLACES[place]
    with pytest.raises(MessageError) as err:
        normalise(build(char))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field} contains {shown}")


def test_tab_stays_allowed_and_cr_lf_keep_their_message():
    assert normalise({**MSG, "Subject": "a\tb", "Headers": {"X-A": "1\t2"}}).subject == "a\tb"
    with pytest.raises(MessageError, match="line break"):
        normalise({**MSG, "Subject": "a\rb"})


@pytest.mark.parametrize("name", ["Return-Path", "Received", "Resent-From", "resent-to",
                                  "Content-Type", "Content-Disposition", "content-id",
                                  "Content-Transfer-Encoding"])
def test_headers_may_not_set_server_or_mime_headers(name):
    with pytest.raises(MessageError) as err:
        normalise({**MSG, "Headers": {name: "x"}})
    assert err.value.field == f"Headers.{name}"
    assert f"Headers may not set {name}" in str(err.value)
    assert "Return-Path, Received and Resent-* are added by mail servers" in str(err.value)
    assert "Content-*" in str(err.value)


def test_other_custom_headers_still_pass():
    out = normalise({**MSG, "Headers": {"X-Ticket": "42", "List-Unsubscribe": "<mailto:u@x.test>"}})
    assert out.headers == (("X-Ticket", "42"), ("List-Unsubscribe", "<mailto:u@x.test>"))


@pytest.fixture
def api(tmp_path):
    sender = FakeSender(max_size=10_000_000)
    project = make_project(tmp_path)
    app = create_app(project, token=TOKEN, open_service=lambda p, n: open_service(
        p, n, sender_factory=lambda: sender, poll_interval=0.05))
    with TestClient(app) as client:
        yield client, sender


@pytest.mark.parametrize("path", ["send", "send-and-forget"])
def test_http_api_answers_422_naming_the_field(api, path):
    client, sender = api
    client.post("/api/services/Notify/send", json=MSG, headers=AUTH)  # learns SIZE: prepare builds
    for msg, field in [({**MSG, "Subject": "Pay\u2028now"}, "Subject"),
                       ({**MSG, "Subject": "cut\x00here"}, "Subject"),
                       ({**MSG, "Headers": {"X-A": "a\x0cb"}}, "Headers.X-A"),
                       ({**MSG, "Headers": {"Return-Path": "<x@example.test>"}},
                        "Headers.Return-Path")]:
        r = client.post(f"/api/services/Notify/{path}", json=msg, headers=AUTH)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field and r.json()["type"] == "MessageError"
    assert sender.attempts == 1 and len(sender.sent) == 1


def test_python_api_refuses_before_queueing(service_factory):
    svc, sender = service_factory()
    for call in (svc.Send, svc.SendAndForget):
        with pytest.raises(MessageError) as err:
            call({**MSG, "Subject": "Pay\u2029now"})
        assert err.value.field == "Subject"
    assert svc.queued() == [] and sender.attempts == 0


def test_an_outbox_row_that_cannot_be_built_is_failed_not_unknown(service_factory):
    # a row queued by an older postline, before validation refused these characters
    svc, sender = service_factory()
    out = normalise(MSG)
    row = {**message_to_json(out), "Subject": "Pay\u2028now"}
    ident = new_identity(out)
    entry = svc.outbox.enqueue(service="Notify", message=row, message_id=ident.message_id,
                               date=ident.date, summary="ann | Pay", limit=100)
    assert svc.flush(10)
    [e] = [e for e in svc.queued() if e.id == entry]
    assert e.state == "failed" and e.attempts == 0
    assert "cannot be built" in e.reason and "nothing was sent" in e.reason
    assert sender.attempts == 0


@pytest.mark.parametrize("msg, says", [
    ({**MSG, "Subject": "Pay\u2028now"}, "Subject contains U+2028 (LINE SEPARATOR) at position 3"),
    ({**MSG, "Headers": {"Received": "from evil"}}, "Headers.Received: Headers may not set "
                                                     "Received"),
])
@pytest.mark.parametrize("forget", [False, True])
def test_postline_send_says_what_is_wrong_in_one_line(tmp_path, monkeypatch, capsys, msg, says,
                                                      forget):
    import json

    from postline.cli import main

    monkeypatch.delenv("POSTLINE_STATE_DIR", raising=False)
    (tmp_path / "assets.yaml").write_text(
        "kind: EmailConnection\nname: Out\noutgoing: {protocol: smtp, host: 127.0.0.1, port: 9, "
        "security: none}\n---\nkind: EmailService\nname: Notify\nconnection: Out\n")
    (tmp_path / "mail.json").write_text(json.dumps(msg))
    argv = ["send", str(tmp_path), "Notify", "--message", str(tmp_path / "mail.json")]
    assert main(argv + (["--forget"] if forget else [])) == 1
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert main(["outbox", "list", str(tmp_path), "Notify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []      # nothing queued, nothing unknown
