"""Pure parts of the Graph adapter (no server): headers, errors, retries, folder names."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from postline.errors import ConfigError, ConnectError, DeliveryError, ProtocolError, TokenError
from postline.protocols.base import Envelope
from postline.protocols.graph import (
    flag_patch,
    merge_delta,
    permanent_delete_supported,
    ref_of,
    split_path,
    warn_delegation,
)
from postline.protocols.graph_http import (
    GraphSession,
    RetryPolicy,
    graph_error_of,
    mailbox_path,
    mailbox_unusable,
    sync_state_lost,
)
from postline.protocols.graph_mime import MAX_MIME_BYTES, split_attachments, without_bcc
from postline.protocols.graph_send import GraphSender, plan


class Tokens:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        return f"tok{len(self.calls)}"

    description = "test tokens"


def session(handler, **kw) -> tuple[GraphSession, Tokens, list[float]]:
    tokens, slept = Tokens(), []
    s = GraphSession(graph_url="https://graph.test/v1.0", mailbox="a@b.test", provider=tokens,
                     policy=kw.pop("policy", RetryPolicy(max_retries=2, max_wait=30)),
                     sleep=slept.append, **kw)
    s._client = httpx.Client(transport=httpx.MockTransport(handler))
    return s, tokens, slept


def test_graph_error_body():
    body = b'{"error": {"code": "ErrorItemNotFound", "message": "Not found.\\nmore"}}'
    assert graph_error_of(body) == ("ErrorItemNotFound", "Not found.")
    assert graph_error_of(b"<html>") == ("", "")
    assert graph_error_of(b'{"error": "x"}') == ("", "")


def test_mailbox_path_and_folder_names():
    assert mailbox_path("a b@x.test") == "/users/a%20b@x.test"
    assert mailbox_path(None) == "/me"
    assert split_path(" Archive/Done/ ") == ["Archive", "Done"]
    for bad in ("", "a//b", "/"):
        with pytest.raises(ConfigError, match="empty"):
            split_path(bad)


def test_refs_and_flags():
    ref = ref_of({"id": "X", "receivedDateTime": "2024-05-01T12:00:00Z", "isRead": True,
                  "flag": {"flagStatus": "flagged"}}, folder="inbox", folder_id="F")
    assert (ref.id, ref.folder_version, ref.flags) == ("X", "F", ("\\Seen", "\\Flagged"))
    assert flag_patch(["\\Seen", "\\Answered"], False) == {"isRead": False}
    assert flag_patch(["$Custom"], True) == {}


def test_bcc_recipients_never_go_into_headers_and_unlisted_header_recipients_are_refused():
    raw = b"From: a@x.test\r\nTo: B <b@x.test>\r\nBcc: c@x.test\r\nSubject: s\r\n\r\nbody\r\n"
    mime, bcc = plan(Envelope(sender="a@x.test", recipients=("B@x.test", "c@x.test",
                                                             "d@x.test")), raw)
    assert bcc == ["c@x.test", "d@x.test"]
    assert mime == b"From: a@x.test\r\nTo: B <b@x.test>\r\nSubject: s\r\n\r\nbody\r\n"
    with pytest.raises(DeliveryError, match="headers name c@x.test, which the recipients do "
                                            "not list") as err:
        plan(Envelope(sender="a@x.test", recipients=("b@x.test",)), raw)
    assert not err.value.retriable
    folded = b"To: b@x.test\nBcc: c@x.test,\n d@x.test\nSubject: s\n\nbody\n"
    assert without_bcc(folded) == b"To: b@x.test\nSubject: s\n\nbody\n"


def test_large_attachments_are_taken_out_largest_first():
    from email.message import EmailMessage

    m = EmailMessage()
    m["To"], m["Subject"] = "b@x.test", "big"
    m.set_content("text\n")
    m.add_attachment(b"s" * 1000, maintype="text", subtype="plain", filename="small.txt")
    m.add_attachment(b"\x00" * 4_000_000, maintype="application", subtype="octet-stream",
                     filename="big.bin")
    raw = m.as_bytes()
    assert split_attachments(b"short") == (b"short", [])
    rest, taken = split_attachments(raw)
    assert [(a.name, len(a.data)) for a in taken] == [("big.bin", 4_000_000)]
    assert len(rest) < 10_000 and b"small.txt" in rest and b"big.bin" not in rest


def test_delta_pages_merge_by_id_latest_state_and_presence_win():
    refs, removed = {}, set()
    item = {"id": "A", "receivedDateTime": "2024-01-01T00:00:00Z"}
    gone = {"@removed": {"reason": "deleted"}}
    merge_delta(refs, removed, {"value": [item, {"id": "B"}, {"id": "C", **gone}]},
                folder="inbox", folder_id="F")
    merge_delta(refs, removed, {"value": [{**item, "isRead": True}, {"id": "B", **gone}]},
                folder="inbox", folder_id="F")
    assert [(r.id, r.flags) for r in refs.values()] == [("A", ("\\Seen",)), ("B", ())]
    assert removed == {"C"}


def test_errors_are_told_apart_by_code():
    def resp(status, code):
        return httpx.Response(status, json={"error": {"code": code, "message": "m"}})

    assert sync_state_lost(httpx.Response(410))
    assert sync_state_lost(resp(400, "syncStateNotFound"))
    assert sync_state_lost(resp(400, "resyncRequired"))
    assert not sync_state_lost(resp(400, "ErrorInvalidRequest"))
    for code in ("MailboxNotEnabledForRESTAPI", "ErrorInvalidUser", "ResourceNotFound"):
        assert mailbox_unusable(resp(404, code))
    assert not mailbox_unusable(resp(404, "ErrorItemNotFound"))


def test_national_clouds_and_delegation_warning(caplog):
    assert permanent_delete_supported("https://graph.microsoft.com/v1.0")
    assert not permanent_delete_supported("https://graph.microsoft.us/v1.0")
    assert not permanent_delete_supported("https://microsoftgraph.chinacloudapi.cn/v1.0")
    assert not warn_delegation("C", None, ["Mail.ReadWrite"])
    assert not warn_delegation("C", "s@x.test", ["Mail.ReadWrite.Shared", "Mail.Send.Shared"])
    assert warn_delegation("C", "s@x.test", ["Mail.ReadWrite", "Mail.Send"])
    assert "Mail.ReadWrite.Shared and Mail.Send.Shared" in caplog.text


def test_504_is_retried_for_idempotent_requests_only():
    answers = [httpx.Response(504), httpx.Response(200, json={})]
    s, _, slept = session(lambda req: answers.pop(0))
    assert s.request("GET", "/x").status_code == 200 and len(slept) == 1
    s, _, slept = session(lambda req: httpx.Response(504))
    assert s.request("POST", "/sendMail").status_code == 504 and slept == []


def test_session_retries_429_after_retry_after_then_succeeds():
    answers = [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={})]
    seen = []

    def handler(req):
        seen.append(req)
        return answers.pop(0)

    s, _, slept = session(handler)
    assert s.request("GET", "/mailFolders").status_code == 200
    assert slept == [3.0]
    assert seen[0].headers["Prefer"] == 'IdType="ImmutableId"'
    assert seen[0].url.path == "/v1.0/users/a@b.test/mailFolders"


def test_session_gives_up_on_long_or_repeated_throttling():
    s, _, slept = session(lambda req: httpx.Response(503))
    with pytest.raises(ConnectError, match="kept throttling GET /x") as err:
        s.request("GET", "/x")
    assert err.value.retriable and len(slept) == 2          # max_retries, doubling waits
    s, _, slept = session(lambda req: httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(ConnectError, match="Retry-After 3600"):
        s.request("GET", "/x")
    assert slept == []


def test_session_refreshes_a_rejected_token_once():
    answers = [httpx.Response(401), httpx.Response(200, json={})]
    s, tokens, _ = session(lambda req: answers.pop(0))
    assert s.request("GET", "/x").status_code == 200
    assert tokens.calls == [False, True]
    s, tokens, _ = session(lambda req: httpx.Response(
        401, json={"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}))
    with pytest.raises(TokenError, match="even after a refresh.*InvalidAuthenticationToken"):
        s.request("GET", "/x")
    assert tokens.calls == [False, True]


def test_links_outside_graph_url_are_refused():
    s, _, _ = session(lambda req: httpx.Response(200))
    with pytest.raises(ProtocolError, match="outside https://graph.test/v1.0"):
        s.request("GET", "https://evil.test/v1.0/x")
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        GraphSession(graph_url="http://graph.test", mailbox=None, provider=Tokens())


def test_sender_maps_answers():
    answers = {"code": 202}

    def handler(req):
        if answers["code"] == 202:
            return httpx.Response(202)
        return httpx.Response(answers["code"], json={"error": {
            "code": "ErrorInvalidRecipients", "message": "At least one recipient is not valid."}})

    s, _, _ = session(handler)
    sender = GraphSender(session=s)
    env = Envelope(sender="a@b.test", recipients=("x@y.test",))
    res = asyncio.run(sender.send(env, b"To: x@y.test\r\n\r\nhi\r\n", message_id="<m@x>"))
    assert res.accepted == ["x@y.test"] and res.recipients[0].code == 202
    answers["code"] = 400
    with pytest.raises(DeliveryError, match="ErrorInvalidRecipients 400") as err:
        asyncio.run(sender.send(env, b"To: x@y.test\r\n\r\nhi\r\n"))
    assert not err.value.retriable
    answers["code"] = 500
    with pytest.raises(DeliveryError) as err:
        asyncio.run(sender.send(env, b"To: x@y.test\r\n\r\nhi\r\n"))
    assert err.value.retriable and err.value.outcome == "unknown"
    with pytest.raises(DeliveryError, match="at most") as err:
        asyncio.run(sender.send(env, b"To: x@y.test\r\n\r\n" + b"x" * (MAX_MIME_BYTES + 1)))
    assert err.value.code == 413
    answers["code"] = 200                     # documented is 202: anything else is unknown
    with pytest.raises(DeliveryError, match="HTTP 200 instead of 202") as err:
        asyncio.run(sender.send(env, b"To: x@y.test\r\n\r\nhi\r\n"))
    assert err.value.outcome == "unknown" and not err.value.retriable


def test_a_draft_left_by_a_failure_is_deleted():
    seen = []

    def handler(req):
        seen.append((req.method, req.url.path.rsplit("/", 1)[-1]))
        if req.method == "POST" and req.url.path.endswith("/messages"):
            return httpx.Response(201, json={"id": "D1"})
        if req.method == "PATCH":
            return httpx.Response(400, json={"error": {"code": "ErrorInvalidRecipients",
                                                       "message": "bad"}})
        return httpx.Response(204)

    s, _, _ = session(handler)
    env = Envelope(sender="a@b.test", recipients=("x@y.test", "hidden@y.test"))
    with pytest.raises(DeliveryError, match="ErrorInvalidRecipients 400.*adding Bcc"):
        asyncio.run(GraphSender(session=s).send(env, b"To: x@y.test\r\n\r\nhi\r\n"))
    assert seen == [("POST", "messages"), ("PATCH", "D1"), ("DELETE", "D1")]


def test_a_tls_failure_is_found_down_httpx_cause_chain():
    import ssl

    from postline.protocols.graph_http import _ssl_cause

    def chained() -> httpx.ConnectError:
        try:
            try:
                raise ssl.SSLCertVerificationError(1, "certificate verify failed")
            except ssl.SSLError as low:
                raise OSError("httpcore's wrapper") from low
        except OSError as mid:
            try:
                raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from mid
            except httpx.ConnectError as top:
                return top

    assert isinstance(_ssl_cause(chained()), ssl.SSLCertVerificationError)
    assert _ssl_cause(httpx.ConnectError("refused")) is None
